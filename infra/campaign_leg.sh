#!/usr/bin/env bash
# One leg of the colour campaign (issue 25): resume the flagship's training from the campaign's
# checkpoint folder for LEG_MINUTES, then score the best model so far on the mix's test split
# and BSDS500 val and add it to the curve in docs/campaign/ (with the bf16 restart point).
#
#   D=/tmp/data/mix B=/tmp/data/bsds LEG_MINUTES=80 setsid nohup infra/campaign_leg.sh \
#       > ~/koala-campaign/leg-$(date +%Y%m%dT%H%M).log 2>&1 &
#
# The first leg starts fresh (there is no checkpoint yet); every later one resumes exactly.
# SIGINT/SIGTERM checkpoint at once and skip the scoring: run it again with LEG_MINUTES=0.01
# to register and score the best model so far.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-/tmp/data/mix}
B=${B:-/tmp/data/bsds}
CK=${CK:-$HOME/koala-campaign}
LEG_MINUTES=${LEG_MINUTES:-80}
EVAL_LIMIT=${EVAL_LIMIT:-200}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$CK"
out=$(.venv/bin/koala train --data "$D" --models chroma_unet --resume --checkpoint-dir "$CK" \
    --total-samples 1000000 --epoch-samples 40000 --leg-minutes "$LEG_MINUTES" --patience 100 \
    --batch-size 16 --resolution 128 --set decoder=lite --set adversarial_weight=0.1 \
    --set finetune_after=1 | tee /dev/stderr)
spec=$(grep -oE 'chroma_unet@[0-9]{8}T[0-9]{9}Z-[0-9a-f]{6}' <<<"$out" | tail -1 || true)
if [ -z "$spec" ]; then
    echo "no epoch finished in this leg: nothing to score" >&2
    exit 0
fi
.venv/bin/koala models record-leg "$spec" --data "$D" --eval "mix=$D:test" --eval "bsds=$B:val" \
    --limit "$EVAL_LIMIT" --reports "$CK/reports/${spec#*@}" \
    --curve docs/campaign/curve.json --restart docs/campaign/restart
