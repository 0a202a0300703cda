# The two commands of the README: `make app` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

# One-off: UMAP's numba kernels compiled into data/numba_cache, so the first map does not wait for them.
NUMBA_WARM := data/numba_cache/.warmed
$(NUMBA_WARM): $(BIN)/.installed
	@echo "compiling UMAP's numba kernels into data/numba_cache (once per install, about a minute) ..."
	$(BIN)/python -c "from lcdash.workspace import warm_numba_cache as w; print(f'done in {w():.0f} s')"
	touch $@

.PHONY: install app test test-slow lint bench
install: $(BIN)/.installed $(NUMBA_WARM)

app: install
	$(BIN)/streamlit run app.py --server.headless true

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q --timeout 600

test-slow: install
	$(BIN)/pytest -q -m slow --timeout 3600

lint: install
	$(BIN)/ruff check .
