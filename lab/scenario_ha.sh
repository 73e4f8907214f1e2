#!/bin/bash
# The failover demo: two directors, lb1 (the topology's "director", 192.168.30.105) and
# lb2 (192.168.30.106, added here), and rs1..rs4, all configured ONLY through the
# project's init.d scripts from one shared file (examples/lab-ha.toml); each director
# finds its [ha] entry by $LVS_HOST. keepalived (VRRP only) moves the VIP, the IPVS sync
# daemons copy the connection table.
#
# What it shows, and checks:
# - lb1 is master and holds the VIP, lb2 is backup without it; both `status` exit 0;
# - a slow download through the VIP (one TCP connection, about 20 s) is in lb2's
#   connection table too: synced;
# - crash: `kill -9` of lb1's keepalived; lb2 holds the VIP within 4 s (polled), new
#   requests are answered through lb2, the router's ARP entry is lb2's MAC;
# - the download goes on to its last byte: the connection survived the failover;
# - failback: lb1 started again takes the VIP back (preempt);
# - planned: `stop` on lb1 hands the VIP to lb2, requests answered throughout (one in
#   flight at the handover may be reset: lb2 had not been sent it yet);
# - every VIP change seen by one `ip monitor address all-nsid` (both directors, in the
#   kernel's order);
# - stop everywhere: no VIP left, status 3.
#
# Exit 0 when all the checks hold. Only ever run inside the lab VM:
#   python -m lab demo --ha      (make demo-ha)

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(dirname "$HERE")
export LVS_CONFIG=$CHECKOUT/examples/lab-ha.toml
VIP=192.168.30.254
REALS=(rs1 rs2 rs3 rs4)
DIRECTORS=(director lb2)   # namespaces; their [ha] names: lb1, lb2
FAILOVER_LIMIT_MS=4000
DOWNLOAD_BYTES=$((2 * 1024 * 1024))
RATE=100k                  # curl --limit-rate: the download takes about 20 s
DOWNLOAD_PORT=40000
OUT=${LAB_RESULTS:-/tmp}/ha
WWW=/run/lab-www           # lab/topology.sh's web server pages
failures=0

ha_name() {  # NAMESPACE -> its [ha] name
    if [ "$1" = director ]; then echo lb1; else echo "$1"; fi
}

initd() {  # HOST ACTION: the host's init.d script, with its own state and lock dirs
    local host=$1 action=$2 script=lvs-realserver
    case $host in director|lb2) script=lvs-director ;; esac
    ip netns exec "$host" env LVS_STATE_DIR="/run/lab/$host/state" \
        LVS_LOCK_DIR="/run/lab/$host/lock" LVS_HOST="$(ha_name "$host")" \
        "$CHECKOUT/init.d/$script" "$action"
}

on_hosts() {  # ACTION HOST...: init.d on several hosts at once, output kept per host
    local action=$1 host pids=()
    shift
    for host in "$@"; do
        (initd "$host" "$action" > "$OUT/$host.$action" 2>&1; echo $? > "$OUT/$host.$action.rc") &
        pids+=($!)
    done
    wait "${pids[@]}"  # these only: a bare wait would wait for ip monitor too
}

on_hosts_ok() {  # ACTION HOST...: on_hosts, each shown, a FAIL for each that did not exit 0
    local action=$1 host rc
    on_hosts "$@"
    shift
    for host in "$@"; do
        rc=$(cat "$OUT/$host.$action.rc")
        shown "$host" "$action" "$rc"
        [ "$rc" = 0 ] || check FAIL "$host: $action exited $rc"
    done
}

shown() {  # HOST ACTION RC: print what init.d said
    local script=lvs-realserver
    case $1 in director|lb2) script=lvs-director ;; esac
    echo "[$1]# LVS_HOST=$(ha_name "$1") init.d/$script $2   (exit $3)"
    indent < "$OUT/$1.$2"
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

holds() {  # HOST: does it hold the VIP?
    [ -n "$(ip -n "$1" -o addr show dev eth0 to "$VIP/32")" ]
}

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

wait_until() {  # SECONDS COMMAND...: poll COMMAND (every ~0.1 s) until it succeeds
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

requests() {  # N: N requests on new connections; prints who answered each
    ip netns exec client curl -s --connect-timeout 3 --max-time 5 -H "Connection: close" \
        "http://$VIP/?[1-$1]"
}

answered() {  # N TEXT: N requests, all answered by a real server?
    local got
    got=$(requests "$1" | grep -c '^rs[1-4]$')
    if [ "$got" -eq "$1" ]; then
        check ok "$2: $got of $1 requests answered"
    else
        check FAIL "$2: $got of $1 requests answered"
    fi
}

keepalived_pids() {  # HOST: the pids of its keepalived (parent and VRRP child)
    cat "/run/lab/$1/state/lvs-director.keepalived.pid" \
        "/run/lab/$1/state/lvs-director.keepalived-vrrp.pid" 2>/dev/null
}

mkdir -p "$OUT"
step "Topology (lab/topology.sh), a second director lb2, one config for every host"
bash "$HERE/topology.sh" up "${#REALS[@]}" || exit 1
ip netns add lb2
ip -n lb2 link set lo up
ip -n lb2 link add eth0 type veth peer name lb2 netns lan
ip -n lb2 link set eth0 address 02:00:c0:a8:1e:6a
ip -n lb2 link set eth0 up
ip -n lan link set lb2 master br0 up
for rs in "${REALS[@]}"; do  # something to download slowly, from every real server
    head -c "$DOWNLOAD_BYTES" /dev/zero > "$WWW/$rs/big"
done
echo "LVS_CONFIG=${LVS_CONFIG#"$CHECKOUT"/}; per host: LVS_STATE_DIR=/run/lab/HOST/state" \
    "LVS_LOCK_DIR=/run/lab/HOST/lock, and LVS_HOST=lb1|lb2 on the directors"
sed -n '/^\[ha\]/,/^]/p' "$LVS_CONFIG" | indent
# Every VIP change on both directors, in the kernel's order (address changes are made
# one at a time under the RTNL lock and queued to this one netlink socket).
ip netns set director 101
ip netns set lb2 102
stdbuf -oL ip -ts -o monitor address all-nsid > "$OUT/monitor" 2>&1 &
monitor=$!

step "Real servers: init.d/lvs-realserver start (rs1..rs4 at once)"
on_hosts_ok start "${REALS[@]}"

step "Directors: init.d/lvs-director start on lb1 and lb2 at once"
on_hosts_ok start "${DIRECTORS[@]}"
started=$(now_ms)
if wait_until 15 holds director; then
    check ok "lb1 (priority 150) is master and holds the VIP, $(($(now_ms) - started)) ms after both started"
else
    check FAIL "lb1 does not hold the VIP 15 s after both started"
fi
if holds lb2; then check FAIL "lb2 holds the VIP too"; else check ok "lb2 (priority 100) is backup, without the VIP"; fi
on_hosts status "${DIRECTORS[@]}"
for host in "${DIRECTORS[@]}"; do
    rc=$(cat "$OUT/$host.status.rc")
    shown "$host" status "$rc"
    if [ "$rc" = 0 ]; then
        check ok "$(ha_name "$host"): status 0 (running as configured)"
    else
        check FAIL "$(ha_name "$host"): status exited $rc"
    fi
done
answered 20 "through lb1"

step "A slow download through the VIP (one TCP connection, ~$((DOWNLOAD_BYTES / 1024)) KiB at $RATE/s)"
# From a port of its own, to find this connection among the short ones before it.
ip netns exec client curl -s -o /dev/null --limit-rate "$RATE" --max-time 120 \
    --local-port "$DOWNLOAD_PORT" -w '%{size_download} %{http_code}\n' "http://$VIP/big" \
    > "$OUT/download" 2>&1 &
download=$!
synced() {  # the listing first, then grep: no pipefail from a grep -q that quits early
    local table
    table=$(ip netns exec lb2 ipvsadm -L -n -c) && grep -q "10.0.0.1:$DOWNLOAD_PORT " <<< "$table"
}
if wait_until 15 synced; then
    echo "[lb2]# ipvsadm -L -n -c | grep $DOWNLOAD_PORT"
    ip netns exec lb2 ipvsadm -L -n -c | grep "$DOWNLOAD_PORT" | indent
    check ok "lb2's connection table lists the download (the sync daemons copied it)"
else
    check FAIL "lb2's connection table does not list the download"
    ip netns exec lb2 ipvsadm -L -n -c | indent
fi

step "Crash: kill -9 lb1's keepalived"
# Stopped first, then killed: keepalived's VRRP child gets SIGTERM when its parent dies
# (PR_SET_PDEATHSIG) and would shut down cleanly, VIPs removed, if it ran before its own
# SIGKILL: a planned stop, not a crash. Stopped, it cannot.
crashed=$(keepalived_pids director)
# shellcheck disable=SC2086 # one pid per word
kill -STOP $crashed
killed=$(now_ms)
# shellcheck disable=SC2086
kill -9 $crashed
if wait_until 10 holds lb2; then
    took=$(($(now_ms) - killed))
    [ "$took" -le "$FAILOVER_LIMIT_MS" ] && verdict=ok || verdict=FAIL
    check "$verdict" "lb2 holds the VIP ${took} ms after kill -9 (polled every ~0.1 s; limit ${FAILOVER_LIMIT_MS} ms)"
else
    check FAIL "lb2 does not hold the VIP 10 s after kill -9"
fi
answering() { requests 1 | grep -q '^rs[1-4]$'; }
if wait_until 10 answering; then
    check ok "a new connection answered through lb2 $(($(now_ms) - killed)) ms after kill -9"
else
    check FAIL "no new connection answered 10 s after kill -9"
fi
lb2_mac=$(ip netns exec lb2 cat /sys/class/net/eth0/address)
router_on_lb2() { ip -n router neigh show "$VIP" | grep -q "lladdr $lb2_mac "; }
if wait_until 10 router_on_lb2; then
    check ok "the router sends the VIP's traffic to lb2 ($lb2_mac): its gratuitous ARPs won"
else
    check FAIL "the router's entry for the VIP is not lb2's MAC ($lb2_mac)"
fi
echo "[router]# ip neigh show $VIP"
ip -n router neigh show "$VIP" | indent
answered 20 "through lb2"

step "The download, held open across the failover"
wait "$download"
read -r size code < "$OUT/download"
echo "curl: ${size:-?} bytes, HTTP ${code:-?}"
if [ "${size:-0}" = "$DOWNLOAD_BYTES" ] && [ "${code:-}" = 200 ]; then
    check ok "the download completed, every byte: the connection survived lb1's crash"
else
    check FAIL "the download got ${size:-?} of $DOWNLOAD_BYTES bytes (HTTP ${code:-?})"
fi

step "Failback: init.d/lvs-director start on lb1 (preempt = true)"
on_hosts_ok start director
back=$(now_ms)
lb1_only() { holds director && ! holds lb2; }
if wait_until 15 lb1_only; then
    check ok "lb1 took the VIP back $(($(now_ms) - back)) ms after its start returned; lb2 let go"
else
    check FAIL "lb1 did not take the VIP back within 15 s"
fi
answered 20 "through lb1 again"

step "Planned failover: init.d/lvs-director stop on lb1"
# Requests on new connections, five per curl, for as long as the stop runs.
(while [ ! -e "$OUT/stopped" ]; do
    ip netns exec client curl -s -o /dev/null --connect-timeout 3 --max-time 5 \
        -H "Connection: close" -w '%{http_code} %{errormsg}\n' "http://$VIP/?[1-5]"
done) > "$OUT/during-stop" &
during=$!
on_hosts_ok stop director
touch "$OUT/stopped"
wait "$during"
if holds lb2 && ! holds director; then
    check ok "lb2 holds the VIP, lb1 none"
else
    check FAIL "after the stop: lb1 $(holds director && echo holds || echo "does not hold"), lb2 $(holds lb2 && echo holds || echo "does not hold") the VIP"
fi
sent=$(wc -l < "$OUT/during-stop")
got=$(grep -c '^200 ' "$OUT/during-stop")
# One request may be lost: a connection in flight as lb1 lets the VIP go, whose first
# packets went through lb1 and the rest to lb2, which resets a connection the sync
# daemon has not sent it yet (they go in buffers that wait up to 2 s to fill).
reset=$(grep -c -i 'reset by peer' "$OUT/during-stop")
if [ "$sent" -gt 0 ] && [ "$got" = "$sent" ]; then
    check ok "requests sent while lb1 stopped: $got of $sent answered"
elif [ "$sent" -gt 0 ] && [ "$reset" = 1 ] && [ "$((got + 1))" = "$sent" ]; then
    check ok "requests sent while lb1 stopped: $got of $sent answered; one, in flight at the handover and not yet synced to lb2, was reset"
else
    check FAIL "requests sent while lb1 stopped: $got of $sent answered ($reset reset)"
fi

step "Every change of the VIP on lb1 and lb2 (ip monitor address all-nsid, kernel order)"
kill "$monitor"
# -ts lines: [TIME][nsid N]... inet VIP/32 ...; "Deleted" before the index when removed.
awk -v vip="$VIP/32" 'index($0, "inet " vip " ") {
    time = substr($0, 2, index($0, "]") - 2); sub(/^.*T/, "", time)
    host = $0 ~ /\[nsid 101\]/ ? "lb1" : $0 ~ /\[nsid 102\]/ ? "lb2" : "?"
    print "    " time "  " host "  " ($0 ~ /Deleted/ ? "deleted" : "added") "  " vip
}' "$OUT/monitor"

step "Stop everything through init.d"
on_hosts_ok stop lb2
on_hosts_ok stop "${REALS[@]}"
on_hosts status "${DIRECTORS[@]}" "${REALS[@]}"
codes=""
all3=ok
for host in "${DIRECTORS[@]}" "${REALS[@]}"; do
    code=$(cat "$OUT/$host.status.rc")
    codes+="${codes:+, }$(ha_name "$host") $code"
    [ "$code" = 3 ] || all3=FAIL
done
check "$all3" "status 3 (not running) everywhere: $codes"
left=$(for host in "${DIRECTORS[@]}" "${REALS[@]}"; do ip -n "$host" -o addr show to "$VIP/32"; done)
if [ -z "$left" ]; then
    check ok "no VIP left anywhere"
else
    check FAIL "VIPs left: $left"
fi

ip netns pids lb2 | xargs -r kill
ip netns del lb2
bash "$HERE/topology.sh" down
echo
if [ "$failures" -eq 0 ]; then
    echo "RESULT: two directors from ${LVS_CONFIG#"$CHECKOUT"/} through init.d: crash failover to lb2 kept the open connection, failback and a planned stop kept serving: all checks hold"
else
    echo "RESULT: $failures check(s) failed"
    exit 1
fi
