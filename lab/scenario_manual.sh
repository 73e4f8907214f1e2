#!/bin/bash
# Phase-1 proof that LVS-DR works in the lab: the how-to's set-up done by
# hand with ipvsadm, ip and sysctl, then checked from the client's side.
#
# Checks, and why they prove DR:
# - 60 requests from the client spread over rs1..rs4 as the weights say
#   (1,1,2,2 with wrr: 10/10/20/20): the director balances;
# - OutPkts stays 0 on the director: the replies went from the real
#   servers straight to the router, not back through the director;
# - the router's ARP entry for the VIP is the director's MAC: the real
#   servers, which also hold the VIP (on lo), kept quiet about it.
#
# Exit 0 when all three hold. Only ever run inside the lab VM:
#   python -m lab demo

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VIP=192.168.30.254
REQUESTS=60
WEIGHTS=(1 1 2 2)   # rs1..rs4, as in the how-to's Director script

on() {  # HOST CMD...: show the command (on stderr: stdout may be kept), run it on HOST
    local host=$1
    shift
    echo "[$host]# $*" >&2
    ip netns exec "$host" "$@"
}

step() {  # a heading, with the seconds since the start (emulation is slow)
    printf '\n== %s  (t=%ss)\n' "$*" "$SECONDS"
}

step "Topology"
bash "$HERE/topology.sh" up "${#WEIGHTS[@]}"

step "Director: the VIP on eth0, a wrr service, four real servers by direct routing"
on director ip addr add "$VIP/32" dev eth0
on director ipvsadm -A -t "$VIP:80" -s wrr
for i in "${!WEIGHTS[@]}"; do
    on director ipvsadm -a -t "$VIP:80" -r "192.168.30.11$((i + 1)):80" -g -w "${WEIGHTS[$i]}"
done
on director ipvsadm -L -n

step "Real servers: no ARP answers for the VIP, then the VIP on lo"
for i in "${!WEIGHTS[@]}"; do
    rs=rs$((i + 1))
    on "$rs" sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
        net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
    on "$rs" ip addr add "$VIP/32" dev lo
done

step "Client: $REQUESTS requests to http://$VIP/"
answers=$LAB_RESULTS/demo-answers.txt
# One curl for all of them: starting curl takes half a second under
# emulation. "?[1-60]" makes 60 URLs, and "Connection: close" a new TCP
# connection for each, so the director schedules every request afresh.
on client curl -s --connect-timeout 5 --max-time 5 -H "Connection: close" \
    "http://$VIP/?[1-$REQUESTS]" > "$answers" || true
sort "$answers" | uniq -c

step "Director: statistics"
on director ipvsadm -L -n --stats
stats=$(ip netns exec director ipvsadm -L -n --stats --exact)

step "Router: ARP"
on router ip neigh show "$VIP"
on router ip neigh show
router_mac=$(ip -n router neigh show "$VIP" | grep -o 'lladdr [0-9a-f:]*' | cut -d' ' -f2)
director_mac=$(ip netns exec director cat /sys/class/net/eth0/address)

# --- verdict -------------------------------------------------------------
failures=0
step "Summary"
echo "requests: $REQUESTS from client 10.0.0.1 to http://$VIP/ (wrr)"
for i in "${!WEIGHTS[@]}"; do
    rs=rs$((i + 1))
    got=$(grep -cx "$rs" "$answers" || true)
    want=$((REQUESTS * WEIGHTS[i] / (1 + 1 + 2 + 2)))
    mark=ok; [ "$got" -eq "$want" ] || { mark=UNEXPECTED; failures=$((failures + 1)); }
    printf '  %s (weight %s): %3s answers, expected %s  %s\n' "$rs" "${WEIGHTS[$i]}" "$got" "$want" "$mark"
done
# OutPkts is the 5th column on the service line and on each "->" line.
out_pkts=$(echo "$stats" | awk '$1 == "TCP" || $1 == "->" { if ($5 ~ /^[0-9]+$/) s += $5 } END { print s + 0 }')
in_pkts=$(echo "$stats" | awk '$1 == "TCP" { print $4 }')
if [ "$out_pkts" -eq 0 ] && [ "${in_pkts:-0}" -gt 0 ]; then
    echo "director: InPkts $in_pkts, OutPkts 0: replies bypassed the director  ok"
else
    echo "director: InPkts ${in_pkts:-?}, OutPkts $out_pkts: expected OutPkts 0  UNEXPECTED"
    failures=$((failures + 1))
fi
if [ -n "$router_mac" ] && [ "$router_mac" = "$director_mac" ]; then
    echo "router: ARP for $VIP -> $router_mac, the director's eth0  ok"
else
    echo "router: ARP for $VIP -> ${router_mac:-none}, director eth0 is $director_mac  UNEXPECTED"
    failures=$((failures + 1))
fi

bash "$HERE/topology.sh" down
if [ "$failures" -eq 0 ]; then
    echo "RESULT: LVS-DR works ($REQUESTS requests, weights respected, no replies through the director)"
else
    echo "RESULT: $failures check(s) failed"
    exit 1
fi
