#!/bin/bash
# The how-to's network, rebuilt from network namespaces inside the lab VM.
#
#   client ---------- router ---------------- lan (a bridge) --+-- director
#   eth0 10.0.0.1     eth0 10.0.0.123          br0              |   eth0 192.168.30.105
#                     eth1 192.168.30.200                       +-- rs1 .. rs4
#                                                                   eth0 192.168.30.111 .. 114
#
# Every "host" is a network namespace; run a command on one with
# `ip netns exec NAME CMD`. The router forwards between the client's
# network and the LAN; the director and the real servers all use it as
# their default gateway, so that in DR the real servers answer the client
# through it directly. Each real server runs a web server on port 80 whose
# page is its own name (rs1, rs2, ...).
#
# MAC addresses are 02:00 followed by the interface's IPv4 address in hex
# (director eth0: 02:00:c0:a8:1e:69), so ARP tables can be read at a glance.
#
# Two additions for the other forwarding modes, each run after `up`:
#
#   far [N]   a second subnet behind the router, for LVS-TUN's real servers:
#             router eth2 172.16.40.200/24 -- bridge br1 (in "lan") -- far1..farN
#             eth0 172.16.40.11x/24, default via the router; web servers as on rsN.
#   ipv6      IPv6 beside IPv4 on every host there is (again after a `renew`):
#             client fd00:0::1/64, router fd00:0::123 and fd00:30::200, director
#             fd00:30::105, rsN fd00:30::11N, farN fd00:40::11N, each default via the
#             router, which forwards IPv6 too. Added `nodad`: no second of "tentative".
#
# Usage: topology.sh up [NUMBER_OF_REAL_SERVERS]   (default 4, at most 9)
#        topology.sh far [NUMBER]    (default 2, at most 9)
#        topology.sh ipv6
#        topology.sh renew HOST    (director, rsN or farN: a new namespace, as after `up`)
#        topology.sh down
#
# `renew` is how tests get a clean host: IPVS keeps connection entries (and the
# real servers they point to, with their counters) per namespace for as long as
# their timeouts say, whatever ipvsadm -C does; only a new namespace has none.
#
# Only ever run inside the lab VM (python -m lab run -- bash lab/topology.sh up).
# Each program start costs a tenth of a second or more under emulation,
# hence one `ip -batch` per host rather than one `ip` per setting.

set -euo pipefail

LAN=192.168.30
FAR=172.16.40      # `far`: real servers behind the router, for LVS-TUN
WWW=/run/lab-www   # the web servers' pages

mac_for() {  # 02:00 + the IPv4 address in hex
    local IFS=.
    # shellcheck disable=SC2086 # splitting on dots is the point
    printf '02:00:%02x:%02x:%02x:%02x' $1
}

add_host() {  # NAME: a namespace with its loopback up
    ip netns add "$1"
    ip -n "$1" link set lo up
}

plug_into_lan() {  # HOST IFNAME ADDRESS [GATEWAY [BRIDGE [PEER]]]: a veth from HOST to a bridge
    local host=$1 ifname=$2 address=$3 gateway=${4:-} bridge=${5:-br0} peer=${6:-$1}
    ip -n "$host" -batch - <<EOF
link add $ifname type veth peer name $peer netns lan
link set $ifname address $(mac_for "$address")
addr add $address/24 dev $ifname
link set $ifname up
${gateway:+route add default via $gateway}
EOF
    ip -n lan link set "$peer" master "$bridge" up
}

start_web_server() {  # NAME: a web server whose page says NAME
    local name=$1
    mkdir -p "$WWW/$name"
    echo "$name" > "$WWW/$name/index.html"
    # busybox httpd starts in milliseconds (Python's takes seconds here),
    # and returns only once it listens: no need to wait for it.
    ip netns exec "$name" busybox httpd -p 80 -h "$WWW/$name"
}

up() {
    local count=${1:-4} i

    add_host lan
    ip -n lan link add br0 type bridge
    ip -n lan link set br0 up

    add_host client
    add_host router
    ip -n client -batch - <<EOF
link add eth0 type veth peer name eth0 netns router
link set eth0 address $(mac_for 10.0.0.1)
addr add 10.0.0.1/24 dev eth0
link set eth0 up
route add default via 10.0.0.123
EOF
    ip -n router -batch - <<EOF
link set eth0 address $(mac_for 10.0.0.123)
addr add 10.0.0.123/24 dev eth0
link set eth0 up
EOF
    plug_into_lan router eth1 "$LAN.200"
    ip netns exec router sysctl -q -w net.ipv4.ip_forward=1

    add_host director
    plug_into_lan director eth0 "$LAN.105" "$LAN.200"

    for i in $(seq "$count"); do
        add_host "rs$i"
        plug_into_lan "rs$i" eth0 "$LAN.11$i" "$LAN.200"
        start_web_server "rs$i"
    done
    echo "topology: up (client, router, director, rs1..rs$count)"
}

far() {  # [COUNT]: real servers far1..farN in 172.16.40.0/24, behind the router
    local count=${1:-2} i
    ip -n lan link add br1 type bridge
    ip -n lan link set br1 up
    plug_into_lan router eth2 "$FAR.200" "" br1 router-far
    for i in $(seq "$count"); do
        add_host "far$i"
        plug_into_lan "far$i" eth0 "$FAR.11$i" "$FAR.200" br1
        start_web_server "far$i"
    done
    echo "topology: far subnet up (far1..far$count)"
}

v6_of() {  # HOST: its IPv6 address/prefix and gateway; nothing for hosts without one
    case $1 in
        client) echo "fd00:0::1/64 fd00:0::123" ;;
        director) echo "fd00:30::105/64 fd00:30::200" ;;
        rs[1-9]) echo "fd00:30::11${1#rs}/64 fd00:30::200" ;;
        far[1-9]) echo "fd00:40::11${1#far}/64 fd00:40::200" ;;
    esac
}

ipv6() {  # IPv6 on every host there is; `replace`: running it again changes nothing
    local name spec
    ip -n router -batch - <<EOF
addr replace fd00:0::123/64 dev eth0 nodad
addr replace fd00:30::200/64 dev eth1 nodad
EOF
    if ip -n router link show eth2 >/dev/null 2>&1; then
        ip -n router addr replace fd00:40::200/64 dev eth2 nodad
    fi
    ip netns exec router sysctl -q -w net.ipv6.conf.all.forwarding=1
    for name in $(ip netns list | cut -d' ' -f1); do
        spec=$(v6_of "$name")
        [ -n "$spec" ] || continue
        # shellcheck disable=SC2086 # two words: address and gateway
        set -- $spec
        ip -n "$name" -batch - <<EOF
addr replace $1 dev eth0 nodad
route replace default via $2 dev eth0
EOF
    done
    echo "topology: IPv6 up"
}

renew() {  # HOST: delete the namespace and build it again, as `up` did
    local host=$1
    case $host in
        director) ;;
        rs[1-9]) ;;
        far[1-9]) ;;
        *) echo "renew: $host: only director, rsN or farN" >&2; exit 2 ;;
    esac
    ip netns pids "$host" | xargs -r kill
    # The LAN end first: a namespace is dismantled in the background, and its veth's
    # peer (named after the host) would still be in the way of the new one.
    ip -n lan link del "$host"
    ip netns delete "$host"
    add_host "$host"
    if [ "$host" = director ]; then
        plug_into_lan director eth0 "$LAN.105" "$LAN.200"
    elif [ "${host#far}" != "$host" ]; then
        plug_into_lan "$host" eth0 "$FAR.11${host#far}" "$FAR.200" br1
        start_web_server "$host"
    else
        plug_into_lan "$host" eth0 "$LAN.11${host#rs}" "$LAN.200"
        start_web_server "$host"
    fi
    settle "$host"
}

settle() {  # HOST: wait until its IPv6 duplicate address detection is over (at most 20 s)
    # A new veth's link-local address is "tentative" for a second or two; a test that
    # takes its "before" snapshot then sees it differ from its "after" one.
    local i
    for i in $(seq 200); do
        [ -z "$(ip -n "$1" -6 addr show tentative)" ] && return 0
        sleep 0.1
    done
    echo "renew: $1: IPv6 addresses still tentative after 20 s" >&2
    exit 1
}

down() {
    local name
    for name in $(ip netns list | cut -d' ' -f1); do
        case $name in
            client | router | director | lan | rs[0-9] | far[0-9]) ;;
            *) continue ;;
        esac
        # A namespace lives on while a process is in it: stop them first.
        ip netns pids "$name" | xargs -r kill
        # Deleting a namespace deletes its veth ends, and their peers with them.
        ip netns delete "$name"
    done
    echo "topology: down"
}

case "${1:-}" in
    up) up "${2:-4}" ;;
    far) far "${2:-2}" ;;
    ipv6) ipv6 ;;
    renew) renew "${2:?renew HOST}" ;;
    down) down ;;
    *) echo "usage: $0 up [REAL_SERVERS] | far [N] | ipv6 | renew HOST | down" >&2; exit 2 ;;
esac
