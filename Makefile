# The two quick-start commands, usable on a fresh machine with Python 3.11 and pip:
#   make run    install into .venv, then compare every method on the synthetic dataset with the
#               shipped weights: the table, and a figure named in the last line
#   make test   install into .venv, then run the test suite
# and the maintenance ones:
#   make gate      the CI regression gate: a small synthetic sweep, trained from scratch, checked
#                  against results/baselines/ci-synthetic-cpu.jsonl
#   make baseline  regenerate the full synthetic sweep, the reports made from it and the tables of
#                  reports/synthetic/findings.md
#   make quickstart-docs  the README's quick-start table and figure (reports/quickstart/)
#   make synthetic-page   reports/synthetic/report.html (with its screenshot) and the qualitative figures
#                         of reports/synthetic/qualitative/ (shipped weights; needs chromium for the screenshot)
#   make shipped-weights         retrain the weights shipped in vssbench/weights/synthetic/ from scratch
#                                (about 40 minutes on 2 cores) and check them tensor for tensor
#   make shipped-weights-update  the same, then ship the retrained ones (rewrites the manifest)
#   make gpu-check        every paper preset timed on a CUDA device, fp32 and AMP (reports/gpu-check.md);
#                         needs a CUDA build of torch in the venv, else it says it skipped (docs/cost.md)
#   make harness-report   what the harness alone sustains per core at VSPW scale (reports/harness.md)
# torch is pinned here only (a local CPU build); the package itself asks for torch>=2.4.

VENV ?= .venv
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

GATE_DIR := .cache/gate
SWEEP_METHODS := perframe,perframe:mask2former-tiny,perframe:pspnet-tiny,copy,copy:mask2former-tiny,mpvss,tfc,dff,accel,stt

SHIPPED_DIR := .cache/shipped
SHIPPED_METHODS := perframe,copy,mpvss,tfc,dff,accel,stt,cffm,mrcfa,dcfm

.PHONY: setup run quickstart-docs synthetic-page test gate gate-baseline baseline shipped-weights shipped-weights-update shipped-weights-train gpu-check harness-report

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

# The first command: every method at k = 1, 5, 10 with the weights shipped in vssbench/weights/synthetic/
# (no training), the table, and the mIoU-against-GFLOPs figure named in its last line.
QUICKSTART := bench run --methods $(SHIPPED_METHODS) --intervals 1,5,10 --memory 7 --shipped-weights

run: setup
	$(BIN)/$(QUICKSTART) --output results/quickstart.jsonl --figure results/quickstart.png

# The README's quick-start table and figure: the same command into reports/quickstart/, from scratch.
quickstart-docs: setup
	rm -rf reports/quickstart
	$(BIN)/$(QUICKSTART) --output reports/quickstart/rows.jsonl --figure reports/quickstart/accuracy_vs_gflops.png

test: setup
	$(BIN)/python -m pytest

gpu-check: setup
	$(BIN)/python scripts/gpu_check.py --out reports/gpu-check.md

harness-report: setup
	$(BIN)/python scripts/harness_scale.py --out reports/harness.md

# Its own cache, so that the gate always trains from scratch exactly as the baseline was made.
gate: setup
	rm -rf $(GATE_DIR)
	$(BIN)/bench run --methods perframe,copy --intervals 1,5 --cache-dir $(GATE_DIR) --output $(GATE_DIR)/run.jsonl
	$(BIN)/bench check $(GATE_DIR)/run.jsonl --baseline results/baselines/ci-synthetic-cpu.jsonl --tolerance speed=0.5 --require-all

# Both write a fresh file: rows of earlier weights would otherwise stay next to the new ones.
gate-baseline: setup
	rm -rf $(GATE_DIR) results/baselines/ci-synthetic-cpu.jsonl
	$(BIN)/bench run --methods perframe,copy --intervals 1,5 --cache-dir $(GATE_DIR) --output results/baselines/ci-synthetic-cpu.jsonl

baseline: setup
	rm -f results/baselines/synthetic-cpu.jsonl
	$(BIN)/bench run --methods $(SWEEP_METHODS) --variants all --intervals 1,2,5,10 --output results/baselines/synthetic-cpu.jsonl
	$(BIN)/bench report results/baselines/synthetic-cpu.jsonl --out reports/synthetic
	$(BIN)/python scripts/findings.py
	$(MAKE) synthetic-page

# The qualitative figures (perframe, copy and MPVSS at k = 5 on the first validation video, shipped
# weights) and the report page of the committed baseline with them inlined.
synthetic-page: setup
	rm -rf reports/synthetic/qualitative
	$(BIN)/bench show --methods perframe,copy,mpvss --intervals 5 --shipped-weights --frames 0:10 --format webp --out reports/synthetic/qualitative
	$(BIN)/bench report results/baselines/synthetic-cpu.jsonl --out reports/synthetic --html --show reports/synthetic/qualitative
	$(BIN)/python scripts/browser.py reports/synthetic/report.html --screenshot reports/synthetic/report.png

# Two threads, as the shipped weights were trained: on a CPU the thread count changes the sums.
shipped-weights-train: setup
	rm -rf $(SHIPPED_DIR)
	mkdir -p $(SHIPPED_DIR) && git describe --always --dirty --abbrev=40 > $(SHIPPED_DIR)/commit
	OMP_NUM_THREADS=2 $(BIN)/bench run --methods $(SHIPPED_METHODS) --intervals 1 --memory 0 --max-videos 1 --speed-rounds 0 --cache-dir $(SHIPPED_DIR) --output $(SHIPPED_DIR)/run.jsonl

shipped-weights: shipped-weights-train
	$(BIN)/python scripts/shipped_weights.py check $(SHIPPED_DIR)

shipped-weights-update: shipped-weights-train
	$(BIN)/python scripts/shipped_weights.py update $(SHIPPED_DIR)
