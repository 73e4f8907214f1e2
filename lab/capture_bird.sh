#!/bin/bash
# Records what BIRD 2 (Debian's bird2) and birdc really print, and what the router's
# kernel routes look like with ECMP, for the BGP parser tests
# (tests/data/captured/bird/). Run in the lab VM:
#   python -m lab run -- bash lab/capture_bird.sh
# Two "directors" (d1, d2) announce 10.98.0.100/32 from lo to a router BIRD with
# merge paths. Only ever run inside the lab VM.
set -uo pipefail
OUT=$LAB_RESULTS/bird
export LC_ALL=C
mkdir -p "$OUT" /run/bird-cap
cap() {  # NAME HOST CMD...
    local name=$1 host=$2
    shift 2
    if [ "$host" = root ]; then
        "$@" > "$OUT/$name.txt" 2> "$OUT/$name.stderr.txt"
    else
        ip netns exec "$host" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.stderr.txt"
    fi
    echo $? > "$OUT/$name.rc"
    [ -s "$OUT/$name.stderr.txt" ] || rm "$OUT/$name.stderr.txt"
    printf '%s\t%s\t%s\n' "$name" "$host" "$*" >> "$OUT/MANIFEST.tsv"
    echo "captured $name (exit $(cat "$OUT/$name.rc")): $*"; cat "$OUT/$name.txt"
}
ip netns add r; ip netns add d1; ip netns add d2
for n in r d1 d2; do ip -n $n link set lo up; done
ip -n r link add br0 type bridge; ip -n r link set br0 up
ip -n r addr add 10.91.0.1/24 dev br0
i=0
for d in d1 d2; do
    i=$((i+1))
    ip -n $d link add eth0 type veth peer name to$d netns r
    ip -n $d addr add 10.91.0.1$i/24 dev eth0; ip -n $d link set eth0 up
    ip -n r link set to$d master br0 up
    ip -n $d addr add 10.98.0.100/32 dev lo
    cat > /run/bird-cap/$d.conf <<CONF
router id 10.91.0.1$i;
protocol device { scan time 10; }
protocol direct lvs_vips { ipv4; interface "lo"; }
protocol bgp bgp1 {
    description "neighbor 10.91.0.1 AS 65000";
    local as 65001;
    neighbor 10.91.0.1 as 65000;
    hold time 3;
    ipv4 { import none; export where net ~ [ 10.98.0.100/32 ]; };
}
CONF
done
cat > /run/bird-cap/r.conf <<CONF
router id 10.91.0.1;
protocol device { scan time 10; }
protocol kernel { ipv4 { export all; }; merge paths yes; }
protocol bgp d1 { local as 65000; neighbor 10.91.0.11 as 65001; hold time 3; ipv4 { import all; export none; }; }
protocol bgp d2 { local as 65000; neighbor 10.91.0.12 as 65001; hold time 3; ipv4 { import all; export none; }; }
CONF
ip netns exec r sysctl -q -w net.ipv4.fib_multipath_hash_policy=1
cap parse_ok root bird -p -c /run/bird-cap/d1.conf
echo 'protocol bgp x { local as 70000000000; }' > /run/bird-cap/bad.conf
cap parse_bad root bird -p -c /run/bird-cap/bad.conf
cap birdc_nosocket d1 birdc -s /run/bird-cap/d1.ctl show protocols
for n in r d1 d2; do ip netns exec $n bird -c /run/bird-cap/$n.conf -s /run/bird-cap/$n.ctl -P /run/bird-cap/$n.pid; done
cat /proc/$(cat /run/bird-cap/d1.pid)/cmdline | tr '\0' ' '; echo
for t in $(seq 100); do
    ip netns exec d1 birdc -s /run/bird-cap/d1.ctl show protocols | grep -q Established &&
    ip netns exec d2 birdc -s /run/bird-cap/d2.ctl show protocols | grep -q Established && break
    sleep 0.2
done
sleep 1
cap protocols_established d1 birdc -s /run/bird-cap/d1.ctl show protocols
cap protocols_all d1 birdc -s /run/bird-cap/d1.ctl show protocols all bgp1
cap route_export d1 birdc -s /run/bird-cap/d1.ctl show route export bgp1
cap route_protocol d1 birdc -s /run/bird-cap/d1.ctl show route protocol lvs_vips
cap route_export_unknown d1 birdc -s /run/bird-cap/d1.ctl show route export nosuch
cap router_protocols r birdc -s /run/bird-cap/r.ctl show protocols
cap router_route r birdc -s /run/bird-cap/r.ctl show route
cap router_ip_route r ip route show 10.98.0.100
cap router_ip_route_json r ip -j route show 10.98.0.100
cap route_get d1 ip -o route get 10.91.0.1
cap configure d1 birdc -s /run/bird-cap/d1.ctl configure
ip -n d1 addr del 10.98.0.100/32 dev lo
t0=$(date +%s.%N)
for t in $(seq 100); do
    ip netns exec d1 birdc -s /run/bird-cap/d1.ctl show route protocol lvs_vips | grep -q 10.98 || break
    sleep 0.05
done
echo "withdrawn in BIRD after $(awk "BEGIN{print $(date +%s.%N) - $t0}") s"
cap route_export_withdrawn d1 birdc -s /run/bird-cap/d1.ctl show route export bgp1
cap route_protocol_withdrawn d1 birdc -s /run/bird-cap/d1.ctl show route protocol lvs_vips
sleep 0.3
cap router_ip_route_one r ip route show 10.98.0.100
ip -n d2 link set eth0 down
t0=$(date +%s.%N)
for t in $(seq 200); do
    ip netns exec r birdc -s /run/bird-cap/r.ctl show protocols | grep d2 | grep -q Established || break
    sleep 0.1
done
echo "session down after $(awk "BEGIN{print $(date +%s.%N) - $t0}") s"
cap protocols_down r birdc -s /run/bird-cap/r.ctl show protocols
cap protocols_down_d2 d2 birdc -s /run/bird-cap/d2.ctl show protocols
cap protocols_all_down d2 birdc -s /run/bird-cap/d2.ctl show protocols all bgp1
cap router_ip_route_none r ip route show 10.98.0.100
kill -TERM $(cat /run/bird-cap/d1.pid)
for t in $(seq 100); do [ -e /proc/$(cat /run/bird-cap/d1.pid 2>/dev/null || echo 1)/stat ] || break; kill -0 $(cat /run/bird-cap/d1.pid) 2>/dev/null || break; sleep 0.1; done
ls -la /run/bird-cap/
cap router_after_term r birdc -s /run/bird-cap/r.ctl show protocols
cap birdc_down d2 birdc -s /run/bird-cap/d2.ctl down
for n in r d2; do kill $(cat /run/bird-cap/$n.pid) 2>/dev/null; done
ip netns del r; ip netns del d1; ip netns del d2
echo done
