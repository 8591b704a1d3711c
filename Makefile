# onerec: `make demo` runs the main job on the embedded (simulated) data, `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean train-ddp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/onerec pipeline --config configs/demo.toml --out runs/demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# 2-rank CPU training (gloo, DDP; FSDP2 with STRATEGY=fsdp) of the tiny config on the demo data
# (runs/demo/data + runs/demo/tok from `make demo`), or on a small generated data set when those are absent.
STRATEGY ?= ddp
train-ddp: $(STAMP)
	rm -rf runs/train-ddp
	if [ -d runs/demo/tok ] && [ -d runs/demo/data ]; then D=runs/demo/data; T=runs/demo/tok; \
	else $(BIN)/python tests/train_fixture.py runs/train-ddp && D=runs/train-ddp/data && T=runs/train-ddp/tok; fi; \
	OMP_NUM_THREADS=1 $(BIN)/torchrun --standalone --nproc_per_node=2 -m onerec.cli train \
	  --data $$D --tokenizer $$T --config configs/tiny.toml --out runs/train-ddp/run \
	  --set train.batch_size=16 --set train.micro_batch_size=8 --set train.epochs=3 \
	  --set train.max_steps=60 --set train.strategy=$(STRATEGY)

clean:
	rm -rf runs .pytest_cache
