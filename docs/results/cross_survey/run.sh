#!/bin/bash
# cross-survey runs for issue 16 (1 fold, spc 100, one thread). The store and encoder were made with
#   lcdash ingest ../shared/data/catalina_train --db tmp/real.duckdb
#   lcdash ingest ../shared/data/eros1 --db tmp/real.duckdb
#   lcdash weights import ../shared/weights/astromer/macho_a0.zip --out tmp/encoders/macho_a0
# and the table with: lcdash evaluate-report tmp/cross/*/results.json --out docs/results/cross_survey
cd /work/wt16
PY=/work/main/.venv/bin/python
C="CSS-SSS (Catalina Siding Spring)"; E="EROS-1 (LMC photographic plates)"
for models in rf,probe rnn cnn; do
  for mode in CE C E; do
    case $mode in CE) T=("$C" "$E");; C) T=("$C");; E) T=("$E");; esac
    echo "=== $(date -u +%H:%M:%S) $models train=$mode"
    $PY -m lcdash evaluate --db tmp/real.duckdb --models $models --spc 100 --folds 1 --test-per-class 100 \
      --threads 1 --band EROS1_R --encoder tmp/encoders/macho_a0 --max-epochs rnn=60 cnn=30 \
      --train-surveys "${T[@]}" --score-surveys "$C" "$E" --out tmp/cross/$models-$mode 2>&1 | grep -v "fit/s\|it/s\]" 
    echo "=== $(date -u +%H:%M:%S) done rc=$?"
  done
done
