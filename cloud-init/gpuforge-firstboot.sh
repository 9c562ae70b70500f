#!/bin/sh
# gpuforge first-boot hook: cloud-init runs it once per instance (/var/lib/cloud/scripts/per-instance/).
# Steps: detect GPUs; install the driver through the node set-up (`gpu-validate setup driver`, method from user data:
# /etc/gpuforge/driver-method, default precompiled; the image's carried packages when it has several); modprobe;
# GPU settings (`gpu-validate setup gpu-settings`: persistence, power limit from the profile); quick validation ->
# /var/log/gpuforge/report.{json,html} + ready marker.
# Failure leaves /var/log/gpuforge/failed and state "failed" in /var/lib/gpuforge/firstboot.json; it never reboots.
set -u
LOG=${GPUFORGE_LOG_DIR:-/var/log/gpuforge}
VARLIB=${GPUFORGE_STATE_DIR:-/var/lib/gpuforge}
ETC=${GPUFORGE_ETC:-/etc/gpuforge}
STATE=$VARLIB/firstboot.json
DEBS=$VARLIB/debs
mkdir -p "$LOG" "$VARLIB"
rm -f "$LOG/ready" "$LOG/failed"
START=$(date +%s)

say() { echo "gpuforge-firstboot: $*"; echo "$(date -u +%FT%TZ) $*" >> "$LOG/firstboot.log"; }
# JSON through python3's json module (the validator needs python3): any byte of a message stays valid JSON.
JSON_STATE='import json, os, sys, time
path, state, step, msg, started = sys.argv[1:6]
tmp = "%s.tmp.%d" % (path, os.getpid())
with open(tmp, "w") as f:
    json.dump({"state": state, "step": step, "message": msg, "started": int(started), "updated": int(time.time())}, f)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, path)'
state() {  # state NAME STEP MESSAGE -> atomic JSON status (cloud-init status.json style)
  python3 -c "$JSON_STATE" "$STATE" "$1" "$2" "$3" "$START"
}
fail() {
  say "FAILED at $1: $2"
  state failed "$1" "$2"
  printf 'step=%s\nmessage=%s\n' "$1" "$(printf '%s' "$2" | tr -d '\r\n\033')" > "$LOG/failed"
  exit 1
}
first_line() { [ -s "$1" ] && head -n 1 "$1" | tr -d '\r'; }

state running detect "detecting GPUs"
say "detecting GPUs"
gpu-validate detect --json > "$LOG/detect.json.tmp" 2> "$LOG/detect.err" \
  || fail detect "gpu-validate detect failed: $(tail -n 3 "$LOG/detect.err")"
mv -f "$LOG/detect.json.tmp" "$LOG/detect.json"
# GPU count, and whether the loaded driver already supports them (detect's "current driver fits": never swap it).
OUT=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(len(d.get("gpus") or []), "fits" if d.get("current_driver_fits") else "-")' "$LOG/detect.json") \
  || fail detect "detect.json unreadable"
NGPU=${OUT%% *}
FITS=${OUT#* }
say "found ${NGPU} NVIDIA GPU(s)"

METHOD=$(first_line "$ETC/driver-method"); METHOD=${METHOD:-precompiled}
IMAGE=$(first_line "$ETC/driver-image")
if [ "$NGPU" -gt 0 ] && [ "$FITS" = fits ]; then
  say "the loaded driver supports these GPUs: nothing installed"
  state running gpu-settings "persistence mode and power limit"
  gpu-validate setup gpu-settings --json > "$LOG/gpu-settings.json" 2>> "$LOG/firstboot.log" \
    || fail gpu-settings "gpu-validate setup gpu-settings failed: $(tail -n 3 "$LOG/firstboot.log")"
elif [ "$NGPU" -gt 0 ]; then
  state running driver "installing the driver ($METHOD)"
  set -- --method "$METHOD" --json
  [ -n "$IMAGE" ] && set -- "$@" --image "$IMAGE"
  if [ "$METHOD" = precompiled ] && ls "$DEBS"/*.deb >/dev/null 2>&1; then
    # Several carried packages: the node set-up picks the one for these GPUs and this kernel and pins its user space.
    for d in "$DEBS"/*.deb; do set -- "$@" --deb "$d"; done
  fi
  say "gpu-validate setup driver $*"
  gpu-validate setup driver "$@" > "$LOG/driver.json" 2>> "$LOG/firstboot.log" \
    || fail driver "gpu-validate setup driver --method $METHOD failed: $(tail -n 3 "$LOG/firstboot.log")"
  if [ "$METHOD" != container ]; then  # a driver container loads its own modules
    state running modprobe "loading nvidia"
    modprobe nvidia 2>> "$LOG/firstboot.log" || fail modprobe "modprobe nvidia failed (see dmesg)"
    modprobe nvidia_uvm 2>> "$LOG/firstboot.log" || true
  fi
  state running gpu-settings "persistence mode and power limit"
  gpu-validate setup gpu-settings --json > "$LOG/gpu-settings.json" 2>> "$LOG/firstboot.log" \
    || fail gpu-settings "gpu-validate setup gpu-settings failed: $(tail -n 3 "$LOG/firstboot.log")"
else
  say "no NVIDIA GPU: driver, modprobe and GPU settings steps skipped"
fi

state running validate "quick validation"
say "validating (quick)"
EXPECT=$(first_line "$ETC/expect")
# shellcheck disable=SC2086
gpu-validate run --level quick ${EXPECT:+--expect "$EXPECT"} --format text --save "$LOG/report.json" --save "$LOG/report.html" > "$LOG/validate.out" 2>&1
rc=$?
# 0 pass, 1 some check failed, 3 warnings only: each still produced a report.
case "$rc" in 0|1|3) ;; *) fail validate "gpu-validate run exited $rc: $(tail -n 3 "$LOG/validate.out")";; esac
[ -s "$LOG/report.json" ] && [ -s "$LOG/report.html" ] || fail validate "no report written"

case "$rc" in 0) result=pass;; 3) result=warn;; *) result=fail;; esac
ELAPSED=$(( $(date +%s) - START ))
printf '{"result": "%s", "validate_rc": %s, "gpus": %s, "driver_method": "%s", "seconds": %s, "uptime": "%s"}\n' \
  "$result" "$rc" "$NGPU" "$(printf '%s' "$METHOD" | tr -cd 'a-z')" "$ELAPSED" "$(cut -d' ' -f1 /proc/uptime)" > "$LOG/ready"
# A node whose checks fail is provisioned but degraded: a clear state, not an error loop.
if [ "$result" = fail ]; then state degraded done "validation found failing checks (see report.json)"; else state done done "$result"; fi
say "ready: validation $result in ${ELAPSED}s (uptime $(cut -d' ' -f1 /proc/uptime)s)"
exit 0
