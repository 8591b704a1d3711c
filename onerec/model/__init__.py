"""The OneRec model: encoder-decoder with an MoE decoder (``onerec.py``), its layers (``layers.py``,
``moe.py``) and trie-constrained beam search (``generate.py``).

Import from the submodules (``from onerec.model.onerec import ModelConfig, OneRec``); this package file
stays empty so that importing it does not pull in torch.
"""
