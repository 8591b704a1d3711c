"""onerec: a generative recommender (OneRec) that writes whole sessions of items.

Pipeline (each a subpackage/module, dependencies point downstream only):
data -> simulate -> embed -> tokenizer -> model/train -> reward -> align -> evaluate -> serve -> pipeline/report
"""

__version__ = "0.1.0"
