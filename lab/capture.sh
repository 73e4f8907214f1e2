#!/bin/bash
# Records what ipvsadm, ip, sysctl and arping really print on the lab's
# kernel, for the parser tests (tests/data/captured/). Run by
# `python -m lab capture`, which copies the files out and writes the README.
#
# Each capture NAME gives NAME.txt (stdout, possibly empty), NAME.rc (the
# exit code) and NAME.stderr.txt when something went to stderr. MANIFEST.tsv
# lists NAME, the namespace ("host") it ran on and the command.
#
# Only ever run inside the lab VM.

set -uo pipefail   # no -e: the failing commands are part of what is recorded

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$LAB_RESULTS/captured
VIP=192.168.30.254
export LC_ALL=C   # the library runs its tools with LANG=C too

mkdir -p "$OUT"
: > "$OUT/MANIFEST.tsv"

cap() {  # NAME HOST CMD...
    local name=$1 host=$2
    shift 2
    ip netns exec "$host" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.stderr.txt"
    echo $? > "$OUT/$name.rc"
    [ -s "$OUT/$name.stderr.txt" ] || rm "$OUT/$name.stderr.txt"
    printf '%s\t%s\t%s\n' "$name" "$host" "$*" >> "$OUT/MANIFEST.tsv"
    echo "captured $name (exit $(cat "$OUT/$name.rc")): $*"
}

must() {  # HOST CMD...: set-up steps, which have to work
    local host=$1
    shift
    echo "[$host]# $*"
    ip netns exec "$host" "$@" || { echo "capture: set-up step failed: $*" >&2; exit 1; }
}

bash "$HERE/topology.sh" up 4 || exit 1

# --- a fresh IPVS table: defaults ------------------------------------------------
cap ipvsadm-L-timeout.defaults director ipvsadm -L --timeout
cap ipvsadm-S-n.empty director ipvsadm -S -n
cap ipvsadm-L-n.empty director ipvsadm -L -n

# --- the how-to's DR service, with some traffic for the counters -------------------
must director ip addr add "$VIP/32" dev eth0
must director ipvsadm -A -t "$VIP:80" -s wrr
must director ipvsadm -a -t "$VIP:80" -r 192.168.30.111:80 -g -w 1
must director ipvsadm -a -t "$VIP:80" -r 192.168.30.112:80 -g -w 2
must director ipvsadm -a -t "$VIP:80" -r 192.168.30.113:80 -g -w 3
must director ipvsadm -a -t "$VIP:80" -r 192.168.30.114:80 -g -w 0
for rs in rs1 rs2 rs3 rs4; do
    must "$rs" sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
        net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
    must "$rs" ip addr add "$VIP/32" dev lo
    # A big page, for some more packets.
    head -c 8000000 /dev/zero > "/run/lab-www/$rs/big"
done
# rs4 has weight 0: it gets no new connections.
ip netns exec client bash -c '
    for _ in 1 2 3 4 5 6; do curl -s --max-time 5 -o /dev/null "http://$1/"; done
    for _ in 1 2 3; do curl -s --max-time 20 -o /dev/null "http://$1/big"; done
' - "$VIP"

# --- the rest of the mixed table -------------------------------------------------
# TCP with source hashing, persistence and sh flags; one tunnelled (-i) real server
must director ipvsadm -A -t "$VIP:443" -s sh -b sh-fallback,sh-port -p 300
must director ipvsadm -a -t "$VIP:443" -r 192.168.30.111:443 -g -w 1
must director ipvsadm -a -t "$VIP:443" -r 192.168.30.112:443 -g -w 1
must director ipvsadm -a -t "$VIP:443" -r 192.168.30.113:443 -i -w 1
# TCP, persistence per /24 of clients, NAT (-m) real servers: rs4 answers
# on another port, rs3 has weight 0 (rr skips it). NAT replies come back
# through the director, which fills the Out* counters.
must director ipvsadm -A -t "$VIP:8080" -s rr -p 300 -M 255.255.255.0
must director ipvsadm -a -t "$VIP:8080" -r 192.168.30.114:8081 -m -w 5
must director ipvsadm -a -t "$VIP:8080" -r 192.168.30.113:8080 -m -w 0
# UDP, one-packet scheduling
must director ipvsadm -A -u "$VIP:53" -s rr -o
must director ipvsadm -a -u "$VIP:53" -r 192.168.30.111:53 -g -w 1
must director ipvsadm -a -u "$VIP:53" -r 192.168.30.112:53 -g -w 0
# SCTP
must director ipvsadm -A --sctp-service "$VIP:3868" -s wlc
must director ipvsadm -a --sctp-service "$VIP:3868" -r 192.168.30.113:3868 -g -w 2
# firewall mark (real servers have no port then)
must director ipvsadm -A -f 1 -s wrr
must director ipvsadm -a -f 1 -r 192.168.30.111 -g -w 1
must director ipvsadm -a -f 1 -r 192.168.30.112 -g -w 2
# IPv6: a TCP service with persistence per /64, and an IPv6 firewall mark
must director ipvsadm -A -t "[2001:db8::1]:80" -s rr -p 600 -M 64
must director ipvsadm -a -t "[2001:db8::1]:80" -r "[2001:db8::10]:80" -g -w 1
must director ipvsadm -a -t "[2001:db8::1]:80" -r "[2001:db8::11]:8080" -m -w 3
must director ipvsadm -A -f 2 -6 -s lc
must director ipvsadm -a -f 2 -6 -r 2001:db8::12 -g -w 1

# NAT traffic: the director forwards, rs4 routes the client's network back
# through it, and serves a page on port 8081 big enough (over 10^8 bytes)
# for ipvsadm to scale the OutBytes counter ("K") unless --exact is given.
# With everyone on one LAN the director would send rs4 ICMP redirects
# ("the router is right there"), rs4 would then bypass it, and the
# transfer would stall: the one-network NAT set-up needs them off.
must director sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.eth0.send_redirects=0
must rs4 ip route add 10.0.0.0/24 via 192.168.30.105
head -c 110000000 /dev/zero > /run/lab-www/rs4/huge
must rs4 busybox httpd -p 8081 -h /run/lab-www/rs4
SECONDS=0
ip netns exec client bash -c '
    curl -s --max-time 60 -o /dev/null "http://$1:8080/big"
    curl -s --max-time 60 -o /dev/null "http://$1:8080/huge"
' - "$VIP"
echo "NAT downloads took ${SECONDS}s"
rm /run/lab-www/rs4/huge

cap ipvsadm-S-n.mixed director ipvsadm -S -n
cap ipvsadm-L-n.mixed director ipvsadm -L -n
cap ipvsadm-L-n-stats.mixed director ipvsadm -L -n --stats
cap ipvsadm-L-n-stats-exact.mixed director ipvsadm -L -n --stats --exact
cap ipvsadm-L-n-rate.mixed director ipvsadm -L -n --rate
cap ipvsadm-L-n-c.mixed director ipvsadm -L -n -c
cap ipvsadm-L-n-t.one-service director ipvsadm -L -n -t "$VIP:80"
cap ipvsadm-set-30-5-60 director ipvsadm --set 30 5 60
cap ipvsadm-L-timeout.set-30-5-60 director ipvsadm -L --timeout
cap ipvsadm-version director ipvsadm --version

# LVS-TUN's tunnel types (the real servers need not exist for the rules): what -S -n
# prints back, the parser's input (tests/test_modes.py). On a table of its own.
must director ipvsadm -C
T=192.168.30.254
for rule in "-A -t $T:80 -s rr" "-a -t $T:80 -r 172.16.40.111:80 -i -w 1" \
    "-a -t $T:80 -r 172.16.40.112:80 -i -w 1 --tun-type gue --tun-port 6080" \
    "-A -t $T:81 -s rr" \
    "-a -t $T:81 -r 172.16.40.111:81 -i --tun-type gue --tun-port 6080 --tun-csum" \
    "-a -t $T:81 -r 172.16.40.112:81 -i --tun-type gue --tun-port 6081 --tun-remcsum" \
    "-A -t $T:82 -s rr" "-a -t $T:82 -r 172.16.40.111:82 -i --tun-type gre" \
    "-a -t $T:82 -r 172.16.40.112:82 -i --tun-type gre --tun-csum" \
    "-a -t $T:82 -r 172.16.40.113:82 -i --tun-type gre --tun-nocsum" \
    "-A -t [fd00:30::254]:80 -s rr" \
    "-a -t [fd00:30::254]:80 -r [fd00:40::111]:80 -i --tun-type gue --tun-port 6080"; do
    # shellcheck disable=SC2086 # one rule, split into ipvsadm's words
    must director ipvsadm $rule
done
cap ipvsadm-S-n.tun director ipvsadm -S -n
cap ipvsadm-a.tun-csum-with-ipip director ipvsadm -a -t "$T:82" -r 172.16.40.114:82 -i \
    --tun-type ipip --tun-csum
must director ipvsadm -C

# --- ipvsadm's errors --------------------------------------------------------------
cap ipvsadm-A.existing-service director ipvsadm -A -t "$VIP:80" -s wrr
cap ipvsadm-a.existing-realserver director ipvsadm -a -t "$VIP:80" -r 192.168.30.111:80 -g -w 1
cap ipvsadm-D.missing-service director ipvsadm -D -t "$VIP:81"
cap ipvsadm-E.missing-service director ipvsadm -E -t "$VIP:81" -s rr
cap ipvsadm-d.missing-realserver director ipvsadm -d -t "$VIP:80" -r 192.168.30.199:80
cap ipvsadm-d.missing-service director ipvsadm -d -t "$VIP:81" -r 192.168.30.111:81
cap ipvsadm-e.missing-realserver director ipvsadm -e -t "$VIP:80" -r 192.168.30.199:80 -g -w 3
cap ipvsadm-A.scheduler-twos director ipvsadm -A -t "$VIP:81" -s twos
cap ipvsadm-A.scheduler-nosuch director ipvsadm -A -t "$VIP:81" -s nosuch

# --- ip -----------------------------------------------------------------------------
cap ip-o-addr-show.director director ip -o addr show
cap ip-o-4-addr-show-dev-eth0.vip director ip -o -4 addr show dev eth0
cap ip-o-link-show.director director ip -o link show
cap ip-route-show.director director ip route show
cap ip-route-show-default.director director ip route show default
cap ip-4-route-show-table-main.director director ip -4 route show table main
cap ip-o-addr-show.realserver rs1 ip -o addr show
cap ip-o-4-addr-show-dev-lo.realserver rs1 ip -o -4 addr show dev lo
cap ip-addr-add.existing director ip addr add "$VIP/32" dev eth0
cap ip-addr-del.missing director ip addr del 192.168.30.250/32 dev eth0
cap ip-route-add-default.existing director ip route add default via 192.168.30.200
cap ip-link-set-dev-missing-up director ip link set dev eth9 up
cap ip-V director ip -V
# The how-to's ifconfig style: a labelled alias, and a second /24 (a "secondary")
must director ip addr add 192.168.30.253/32 dev eth0 label eth0:1
must director ip addr add 192.168.30.106/24 dev eth0
cap ip-o-4-addr-show-dev-eth0.label-secondary director ip -o -4 addr show dev eth0

# --- sysctl ---------------------------------------------------------------------------
cap sysctl-n-arp_ignore.all.realserver rs1 sysctl -n net.ipv4.conf.all.arp_ignore
cap sysctl-n-arp_ignore.all.default director sysctl -n net.ipv4.conf.all.arp_ignore
cap sysctl-w-arp_ignore.eth0 rs2 sysctl -w net.ipv4.conf.eth0.arp_ignore=1
cap sysctl-n.missing-key director sysctl -n net.ipv4.conf.eth9.arp_ignore
cap sysctl-w.missing-key director sysctl -w net.ipv4.conf.eth9.arp_ignore=1
cap sysctl-w.invalid-value director sysctl -w net.ipv4.conf.all.arp_ignore=abc
cap sysctl-version director sysctl --version

# --- arping (iputils) -----------------------------------------------------------------
cap arping-iputils-V director arping -V
cap arping-iputils-h director arping -h
# The how-to's announcement of the VIP to the gateway, for real
cap arping-iputils.vip-to-gateway director arping -c 2 -I eth0 -s "$VIP" 192.168.30.200
cap arping-iputils-U.vip director arping -c 1 -U -I eth0 -s "$VIP" "$VIP"

uname -r > "$OUT/KERNEL"
bash "$HERE/topology.sh" down
echo "capture: done, $(wc -l < "$OUT/MANIFEST.tsv") commands"
