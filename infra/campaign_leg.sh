#!/usr/bin/env bash
# One leg of the colour campaign (issue 25): resume the flagship's training from the campaign's
# checkpoint folder for LEG_MINUTES, then score the best model so far on the mix's test split
# and BSDS500 val and add it to the curve in docs/campaign/ (with the bf16 restart point).
#
#   D=/tmp/data/mix B=/tmp/data/bsds LEG_MINUTES=80 setsid nohup infra/campaign_leg.sh \
#       > ~/koala-campaign/leg-$(date +%Y%m%dT%H%M).log 2>&1 &
#
# The first leg starts fresh (there is no checkpoint yet), or from INIT_FROM (a registered
# name@version) when set; every later one resumes exactly. ADVERSARIAL_WEIGHT sets the
# adversarial term (0 since leg 5, which showed that 0.1 costs accuracy and brings wrong hues);
# REBALANCE the class rebalancing of the targets (1: none; 0.5: Zhang et al.'s lambda);
# CURVE and RESTART say where the scored point and the bf16 restart point go; T is the dataset
# whose test split is scored as "mix" (default D: set it when D is a union of datasets,
# infra/dataset_union.sh, so that the score stays comparable); LR the peak learning rate;
# CPUS (a taskset list, e.g. 0) pins the leg to those cores, so two variants can run side by
# side on equal shares of the machine. DECODER (lite), RESOLUTION (128), FINETUNE_AFTER (1:
# the encoder's late blocks train from the second epoch; a large number keeps them frozen) and
# HINTS (false; true: the hint-taking model of issue 28, started from INIT_FROM with its hint
# inputs at zero) set the rest of the recipe; TOTAL_SAMPLES (1,000,000: the learning rate's
# cosine spans them) and EPOCH_SAMPLES (40,000: a val point and checkpoint that often) its length;
# SETS adds KEY=VALUE model options (space-separated, e.g. "hints_only=true").
# SIGINT/SIGTERM checkpoint at once and skip the scoring: run it again with LEG_MINUTES=0.01
# to register and score the best model so far.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-/tmp/data/mix}
B=${B:-/tmp/data/bsds}
T=${T:-$D}
LR=${LR:-0.001}
CK=${CK:-$HOME/koala-campaign}
LEG_MINUTES=${LEG_MINUTES:-80}
EVAL_LIMIT=${EVAL_LIMIT:-200}
ADVERSARIAL_WEIGHT=${ADVERSARIAL_WEIGHT:-0}
REBALANCE=${REBALANCE:-1.0}
DECODER=${DECODER:-lite}
RESOLUTION=${RESOLUTION:-128}
FINETUNE_AFTER=${FINETUNE_AFTER:-1}
HINTS=${HINTS:-false}
TOTAL_SAMPLES=${TOTAL_SAMPLES:-1000000}
EPOCH_SAMPLES=${EPOCH_SAMPLES:-40000}
CURVE=${CURVE:-docs/campaign/curve.json}
RESTART=${RESTART:-docs/campaign/restart}
pin=()
sets=()
for kv in ${SETS:-}; do sets+=(--set "$kv"); done
[ -n "${CPUS:-}" ] && pin=(taskset -c "$CPUS")
init=()
[ -n "${INIT_FROM:-}" ] && [ ! -e "$CK/chroma_unet/state.json" ] && init=(--init-from "$INIT_FROM")
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$CK"
out=$("${pin[@]}" .venv/bin/koala train --data "$D" --models chroma_unet --resume \
    --checkpoint-dir "$CK" "${init[@]}" --total-samples "$TOTAL_SAMPLES" \
    --epoch-samples "$EPOCH_SAMPLES" --leg-minutes "$LEG_MINUTES" --lr "$LR" --patience 100 \
    --batch-size 16 --resolution "$RESOLUTION" \
    --set decoder="$DECODER" --set adversarial_weight="$ADVERSARIAL_WEIGHT" \
    --set finetune_after="$FINETUNE_AFTER" --set rebalance="$REBALANCE" --set hints="$HINTS" "${sets[@]}" |
    tee /dev/stderr)
spec=$(grep -oE 'chroma_unet@[0-9]{8}T[0-9]{9}Z-[0-9a-f]{6}' <<<"$out" | tail -1 || true)
if [ -z "$spec" ]; then
    echo "no epoch finished in this leg: nothing to score" >&2
    exit 0
fi
"${pin[@]}" .venv/bin/koala models record-leg "$spec" --data "$D" --eval "mix=$T:test" --eval "bsds=$B:val" \
    --limit "$EVAL_LIMIT" --reports "$CK/reports/${spec#*@}" \
    --curve "$CURVE" --restart "$RESTART"
