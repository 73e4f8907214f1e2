#!/bin/bash
# The demo: the how-to's LVS-DR, with the director and each real server configured ONLY
# through the project's init.d scripts, from the one shared config file
# (examples/lab-dr.toml), then checked from the outside, then stopped through init.d.
#
# Checks, and why they prove DR:
# - 60 requests from the client spread over rs1..rs4 as the weights say
#   (1,1,2,2 with wrr: 10/10/20/20): the director balances;
# - OutPkts stays 0 on the director: the replies went from the real servers
#   straight to the router, not back through the director;
# - the router's ARP entry for the VIP is the director's MAC, and an arping for
#   the VIP from the router is answered by the director's MAC only: the real
#   servers, which also hold the VIP (on lo), keep quiet about it;
# - init.d status: 0 on the director after start, 3 everywhere after stop.
#
# Every namespace shares one file system, so each "host" gets its own state and
# lock directory, as /etc/default/lvs-* would say on a real machine.
#
# Exit 0 when all the checks hold. Only ever run inside the lab VM:
#   python -m lab demo

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(dirname "$HERE")
export LVS_CONFIG=$CHECKOUT/examples/lab-dr.toml
VIP=192.168.30.254
REQUESTS=60
REALS=(rs1 rs2 rs3 rs4)
WEIGHTS=(1 1 2 2)   # as in examples/lab-dr.toml
OUT=${LAB_RESULTS:-/tmp}/initd
failures=0

initd() {  # HOST ACTION: the host's init.d script, with its own state and lock dirs
    local host=$1 action=$2 script=lvs-realserver
    [ "$host" = director ] && script=lvs-director
    ip netns exec "$host" env LVS_STATE_DIR="/run/lab/$host/state" \
        LVS_LOCK_DIR="/run/lab/$host/lock" "$CHECKOUT/init.d/$script" "$action"
}

show_initd() {  # HOST ACTION: run it, show the command, its output and exit code
    local host=$1 action=$2 rc
    initd "$host" "$action" > "$OUT/$host.$action" 2>&1
    rc=$?
    shown "$host" "$action" "$rc"
    return "$rc"
}

shown() {  # HOST ACTION RC: print what init.d said (kept in $OUT/HOST.ACTION)
    local script=lvs-realserver
    [ "$1" = director ] && script=lvs-director
    echo "[$1]# init.d/$script $2   (exit $3)"
    indent < "$OUT/$1.$2"
}

on_reals() {  # ACTION: init.d on every real server at once (they are separate machines)
    local rs
    for rs in "${REALS[@]}"; do
        (initd "$rs" "$1" > "$OUT/$rs.$1" 2>&1; echo $? > "$OUT/$rs.$1.rc") &
    done
    wait
}

on_reals_ok() {  # ACTION: on_reals, each shown, and a FAIL for each that did not exit 0
    local rs rc
    on_reals "$1"
    for rs in "${REALS[@]}"; do
        rc=$(cat "$OUT/$rs.$1.rc")
        shown "$rs" "$1" "$rc"
        [ "$rc" = 0 ] || check FAIL "$rs: $1 exited $rc"
    done
}

indent() {
    sed 's/^/    /'
}

check() {  # OK? TEXT: one verdict line
    if [ "$1" = ok ]; then
        echo "  ok    $2"
    else
        echo "  FAIL  $2"
        failures=$((failures + 1))
    fi
}

step() {  # a heading, with the seconds since the start (emulation is slow)
    printf '\n== %s  (t=%ss)\n' "$*" "$SECONDS"
}

mkdir -p "$OUT"
step "Topology (lab/topology.sh) and the one config file for every host"
bash "$HERE/topology.sh" up "${#REALS[@]}" || exit 1
echo "LVS_CONFIG=${LVS_CONFIG#"$CHECKOUT"/}; per host: LVS_STATE_DIR=/run/lab/HOST/state LVS_LOCK_DIR=/run/lab/HOST/lock"

# Real servers first: once the director routes to them, they must accept the VIP.
step "Real servers: init.d/lvs-realserver start (rs1..rs4 at once)"
on_reals_ok start

step "Director: init.d/lvs-director start"
show_initd director start || check FAIL "director: start failed"

step "Client: $REQUESTS requests to http://$VIP/, each on a new connection"
answers=$OUT/answers.txt
# One curl for all of them (a program start costs half a second under emulation);
# "Connection: close" makes each a new TCP connection, scheduled afresh.
ip netns exec client curl -s --connect-timeout 5 --max-time 5 -H "Connection: close" \
    "http://$VIP/?[1-$REQUESTS]" > "$answers"
echo "answered by:"
{ tr '\n' ' ' < "$answers"; echo; } | fold -s -w 80 | sed 's/ *$//' | indent
line="distribution:"
distribution=ok
for i in "${!REALS[@]}"; do
    got=$(grep -cx "${REALS[$i]}" "$answers")
    want=$((REQUESTS * WEIGHTS[i] / (1 + 1 + 2 + 2)))
    line+="  ${REALS[$i]} $got (expected $want)"
    [ "$got" -eq "$want" ] || distribution=FAIL
done
echo "$line"
check "$distribution" "requests spread as the weights 1:1:2:2 say"

step "Director: ipvsadm -L -n --stats"
# The kernel folds its per-CPU counters into what ipvsadm reads every 2 s.
sleep 2.5
ip netns exec director ipvsadm -L -n --stats
stats=$(ip netns exec director ipvsadm -L -n --stats --exact)
out_pkts=$(awk '$1 == "TCP" || $1 == "->" { s += $5 } END { print s + 0 }' <<< "$stats")
in_pkts=$(awk '$1 == "TCP" { print $4 }' <<< "$stats")
if [ "$out_pkts" -eq 0 ] && [ "${in_pkts:-0}" -gt 0 ]; then
    check ok "OutPkts 0 (InPkts $in_pkts): the replies bypassed the director - that is DR"
else
    check FAIL "InPkts ${in_pkts:-?}, OutPkts $out_pkts: expected OutPkts 0"
fi

step "ARP: who answers for $VIP"
director_mac=$(ip netns exec director cat /sys/class/net/eth0/address)
neighbour=$(ip -n router neigh show "$VIP")
echo "[router]# ip neigh show $VIP"
echo "    $neighbour"
if grep -q "lladdr $director_mac " <<< "$neighbour "; then
    check ok "the router's entry for the VIP is the director's eth0 ($director_mac)"
else
    check FAIL "the router's entry for the VIP is not the director's eth0 ($director_mac)"
fi
echo "[router]# arping -b -c 2 -I eth1 $VIP"
arping=$(ip netns exec router arping -b -c 2 -I eth1 "$VIP")
indent <<< "$arping"
macs=$(grep -o 'reply from [0-9.]* \[[0-9A-Fa-f:]*\]' <<< "$arping" | grep -o '\[.*\]' \
    | tr -d '[]' | tr 'A-F' 'a-f' | sort -u)
if [ "$macs" = "$director_mac" ]; then
    check ok "arping for the VIP: every reply from the director's MAC, none from a real server"
else
    check FAIL "arping for the VIP: replies from ${macs:-nobody} (director: $director_mac)"
fi

step "Director: init.d/lvs-director status"
show_initd director status
rc=$?
if [ "$rc" = 0 ]; then
    check ok "status 0: running as configured"
else
    check FAIL "status exited $rc, expected 0"
fi

step "Stop through init.d: director, then the real servers"
show_initd director stop || check FAIL "director: stop failed"
on_reals_ok stop

step "Status after stop"
show_initd director status
rc=$?
on_reals status
codes="director $rc"
all3=ok
[ "$rc" = 3 ] || all3=FAIL
for rs in "${REALS[@]}"; do
    code=$(cat "$OUT/$rs.status.rc")
    codes+=", $rs $code"
    [ "$code" = 3 ] || all3=FAIL
done
check "$all3" "status 3 (not running) everywhere: $codes"
vip_left=$(ip -n director -o addr show to "$VIP/32"; for rs in "${REALS[@]}"; do ip -n "$rs" -o addr show to "$VIP/32"; done)
services=$(ip netns exec director ipvsadm -S -n)
if [ -z "$vip_left" ] && [ -z "$services" ]; then
    check ok "no VIP and no IPVS service left anywhere"
else
    check FAIL "left behind: ${vip_left:-} ${services:-}"
fi

bash "$HERE/topology.sh" down
echo
if [ "$failures" -eq 0 ]; then
    echo "RESULT: LVS-DR set up and torn down by init.d/lvs-director and init.d/lvs-realserver from ${LVS_CONFIG#"$CHECKOUT"/}: all checks hold"
else
    echo "RESULT: $failures check(s) failed"
    exit 1
fi
