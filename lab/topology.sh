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
# Usage: topology.sh up [NUMBER_OF_REAL_SERVERS]   (default 4, at most 9)
#        topology.sh renew HOST    (director or rsN: a new namespace, as after `up`)
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

plug_into_lan() {  # HOST IFNAME ADDRESS [GATEWAY]: a veth from HOST to the bridge
    local host=$1 ifname=$2 address=$3 gateway=${4:-}
    ip -n "$host" -batch - <<EOF
link add $ifname type veth peer name $host netns lan
link set $ifname address $(mac_for "$address")
addr add $address/24 dev $ifname
link set $ifname up
${gateway:+route add default via $gateway}
EOF
    ip -n lan link set "$host" master br0 up
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

renew() {  # HOST: delete the namespace and build it again, as `up` did
    local host=$1
    case $host in
        director) ;;
        rs[1-9]) ;;
        *) echo "renew: $host: only director or rsN" >&2; exit 2 ;;
    esac
    ip netns pids "$host" | xargs -r kill
    # The LAN end first: a namespace is dismantled in the background, and its veth's
    # peer (named after the host) would still be in the way of the new one.
    ip -n lan link del "$host"
    ip netns delete "$host"
    add_host "$host"
    if [ "$host" = director ]; then
        plug_into_lan director eth0 "$LAN.105" "$LAN.200"
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
            client | router | director | lan | rs[0-9]) ;;
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
    renew) renew "${2:?renew HOST}" ;;
    down) down ;;
    *) echo "usage: $0 up [REAL_SERVERS] | renew HOST | down" >&2; exit 2 ;;
esac
