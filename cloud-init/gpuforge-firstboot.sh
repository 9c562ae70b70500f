#!/bin/sh
# gpuforge first-boot hook: cloud-init runs it once per instance (/var/lib/cloud/scripts/per-instance/).
# Steps: detect GPUs; install the matching precompiled driver package if the image carries several (or none is
# installed); modprobe; persistence mode; quick validation -> /var/log/gpuforge/report.{json,html} + ready marker.
# Failure leaves /var/log/gpuforge/failed and state "failed" in /var/lib/gpuforge/firstboot.json; it never reboots.
set -u
LOG=${GPUFORGE_LOG_DIR:-/var/log/gpuforge}
VARLIB=${GPUFORGE_STATE_DIR:-/var/lib/gpuforge}
STATE=$VARLIB/firstboot.json
DEBS=$VARLIB/debs
mkdir -p "$LOG" "$VARLIB"
rm -f "$LOG/ready" "$LOG/failed"
START=$(date +%s)

say() { echo "gpuforge-firstboot: $*"; echo "$(date -u +%FT%TZ) $*" >> "$LOG/firstboot.log"; }
state() {  # state NAME STEP MESSAGE -> atomic JSON status (cloud-init status.json style)
  tmp="$STATE.tmp.$$"
  printf '{"state": "%s", "step": "%s", "message": "%s", "started": %s, "updated": %s}\n' \
    "$1" "$2" "$(echo "$3" | tr -d '"\\' | tr '\n' ' ')" "$START" "$(date +%s)" > "$tmp" && mv -f "$tmp" "$STATE"
}
fail() {
  say "FAILED at $1: $2"
  state failed "$1" "$2"
  printf 'step=%s\nmessage=%s\n' "$1" "$2" > "$LOG/failed"
  exit 1
}

state running detect "detecting GPUs"
say "detecting GPUs"
gpu-validate detect --json > "$LOG/detect.json.tmp" 2> "$LOG/detect.err" \
  || fail detect "gpu-validate detect failed: $(tail -n 3 "$LOG/detect.err")"
mv -f "$LOG/detect.json.tmp" "$LOG/detect.json"

# How many NVIDIA GPUs, and which precompiled packages fit them, best first (python3 is there: the validator needs it).
# The recommendation comes first, then every other (driver, flavour) the GPUs' ID lists accept.
PICK='import json, sys
d = json.load(open(sys.argv[1]))
rec = d.get("recommendation") or {}
names = [rec["package"]] if rec.get("package") else []
for cands in (rec.get("per_model") or {}).values():
    for c in cands:
        if c.get("ok"):
            for fl in c.get("flavours") or [c.get("flavour")]:
                names.append("gpuforge-nvidia-kmod-%s-%s-%s" % (fl, c["driver_version"], d.get("kernel")))
if d.get("current_driver_fits"):  # the loaded driver supports these GPUs: never swap it for an offered one
    names = ["current"]
print(len(d.get("gpus") or []), " ".join(dict.fromkeys(n for n in names if n)) or "-")'
OUT=$(python3 -c "$PICK" "$LOG/detect.json") || fail detect "detect.json unreadable"
NGPU=${OUT%% *}
CANDIDATES=${OUT#* }
say "found ${NGPU:-0} NVIDIA GPU(s); driver packages that fit: ${CANDIDATES}"

if [ "${NGPU:-0}" -gt 0 ] && [ "$CANDIDATES" = current ]; then
  say "the loaded driver supports these GPUs: nothing installed"
elif [ "${NGPU:-0}" -gt 0 ]; then
  state running driver "installing the driver"
  # Already installed (single-driver image) wins; else the first candidate the image carries.
  WANT=""
  for c in $CANDIDATES; do
    if dpkg-query -W -f='${Status}' "$c" 2>/dev/null | grep -q "install ok installed"; then WANT=$c; break; fi
  done
  if [ -z "$WANT" ] && ls "$DEBS"/*.deb >/dev/null 2>&1; then
    # Several carried packages: the validator's installer picks the one for these GPUs and this kernel and pins
    # its user space (fetched from the archive: one image cannot hold several user-space versions at once).
    say "choosing among $(ls "$DEBS" | tr '\n' ' ')"
    gpu-validate drivers install --deb "$DEBS"/*.deb >> "$LOG/firstboot.log" 2>&1 \
      || fail driver "gpu-validate drivers install --deb failed (see $LOG/firstboot.log)"
    WANT="(chosen by gpu-validate drivers install)"
  fi
  if [ -z "$WANT" ] && ! modinfo nvidia >/dev/null 2>&1; then
    fail driver "no precompiled package for these GPUs on $(uname -r) in the image (wanted one of: $CANDIDATES)"
  fi
  say "driver package: ${WANT:-already present}"
  state running modprobe "loading nvidia"
  modprobe nvidia 2>> "$LOG/firstboot.log" || fail modprobe "modprobe nvidia failed (see dmesg)"
  modprobe nvidia_uvm 2>> "$LOG/firstboot.log" || true
  systemctl start nvidia-persistenced.service 2>/dev/null || nvidia-smi -pm 1 >> "$LOG/firstboot.log" 2>&1 || true
else
  say "no NVIDIA GPU: driver, modprobe and persistence steps skipped"
fi

state running validate "quick validation"
say "validating (quick)"
EXPECT=""
[ -s "${GPUFORGE_ETC:-/etc/gpuforge}/expect" ] && EXPECT=$(head -n 1 "${GPUFORGE_ETC:-/etc/gpuforge}/expect")
# shellcheck disable=SC2086
gpu-validate run --level quick ${EXPECT:+--expect "$EXPECT"} --format text --save "$LOG/report.json" --save "$LOG/report.html" > "$LOG/validate.out" 2>&1
rc=$?
# 0 pass, 1 some check failed, 3 warnings only: each still produced a report.
case "$rc" in 0|1|3) ;; *) fail validate "gpu-validate run exited $rc: $(tail -n 3 "$LOG/validate.out")";; esac
[ -s "$LOG/report.json" ] && [ -s "$LOG/report.html" ] || fail validate "no report written"

case "$rc" in 0) result=pass;; 3) result=warn;; *) result=fail;; esac
ELAPSED=$(( $(date +%s) - START ))
printf '{"result": "%s", "validate_rc": %s, "gpus": %s, "seconds": %s, "uptime": "%s"}\n' \
  "$result" "$rc" "${NGPU:-0}" "$ELAPSED" "$(cut -d' ' -f1 /proc/uptime)" > "$LOG/ready"
# A node whose checks fail is provisioned but degraded: a clear state, not an error loop.
if [ "$result" = fail ]; then state degraded done "validation found failing checks (see report.json)"; else state done done "$result"; fi
say "ready: validation $result in ${ELAPSED}s (uptime $(cut -d' ' -f1 /proc/uptime)s)"
exit 0
