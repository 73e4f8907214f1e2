#!/bin/bash
# Records what ipvsadm, nft and sysctl print on the lab's kernel for the fwmark services,
# the rest of ipvsadm's options (thresholds -x/-y, scheduler flags -b, one-packet -o,
# persistence netmask -M, the SIP persistence engine --pe sip) and the IPVS sysctls
# (issue 12). Run by `python -m lab run -- bash lab/capture_ipvs_options.sh`; the files
# land in $LAB_RESULTS/captured and are copied to tests/data/captured-ipvs-options/.
# Each capture NAME gives NAME.txt, NAME.rc and NAME.stderr.txt (when not empty);
# MANIFEST.tsv lists NAME, the namespace and the command.
#
# Only ever run inside the lab VM.

set -uo pipefail   # no -e: the failing commands are part of what is recorded

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$LAB_RESULTS/captured
VIP=192.168.30.254
export LC_ALL=C

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

capin() {  # NAME HOST STDIN-FILE CMD...: the same, with a file on stdin
    local name=$1 host=$2 input=$3
    shift 3
    ip netns exec "$host" "$@" < "$input" > "$OUT/$name.txt" 2> "$OUT/$name.stderr.txt"
    echo $? > "$OUT/$name.rc"
    [ -s "$OUT/$name.stderr.txt" ] || rm "$OUT/$name.stderr.txt"
    cp "$input" "$OUT/$name.stdin.txt"
    printf '%s\t%s\t%s < %s.stdin.txt\n' "$name" "$host" "$*" "$name" >> "$OUT/MANIFEST.tsv"
    echo "captured $name (exit $(cat "$OUT/$name.rc")): $* < $input"
}

must() {  # HOST CMD...
    local host=$1
    shift
    echo "[$host]# $*"
    ip netns exec "$host" "$@" || { echo "capture: set-up step failed: $*" >&2; exit 1; }
}

bash "$HERE/topology.sh" up 2 || exit 1
lsmod | grep -E '^(ip_vs|nf_tables|nf_conntrack)' || true

# --- the IPVS sysctls and forwarding, as a fresh namespace has them -------------------
VS_KEYS="net.ipv4.vs.conn_reuse_mode net.ipv4.vs.expire_nodest_conn
net.ipv4.vs.expire_quiescent_template net.ipv4.vs.sloppy_tcp net.ipv4.vs.sloppy_sctp"
# shellcheck disable=SC2086
cap sysctl-n-vs.defaults director sysctl -n $VS_KEYS net.ipv4.ip_forward \
    net.ipv6.conf.all.forwarding
cap sysctl-w-vs.sloppy_tcp director sysctl -w net.ipv4.vs.sloppy_tcp=1
cap sysctl-w-vs.conn_reuse_mode-bad director sysctl -w net.ipv4.vs.conn_reuse_mode=abc
must director sysctl -q -w net.ipv4.vs.sloppy_tcp=0

# --- the options, one of each ---------------------------------------------------------
must director ipvsadm -A -t "$VIP:80" -s mh -b mh-port,mh-fallback
must director ipvsadm -a -t "$VIP:80" -r 192.168.30.111:80 -g -w 1 -x 100 -y 50
must director ipvsadm -a -t "$VIP:80" -r 192.168.30.112:80 -g -w 2 -x 1
cap ipvsadm-a.lower-without-upper director ipvsadm -a -t "$VIP:80" -r 192.168.30.113:80 -g -w 2 -y 7
must director ipvsadm -A -t "$VIP:81" -s sh -b sh-port
must director ipvsadm -A -u "$VIP:5060" -s rr -p 60 --pe sip -o
must director ipvsadm -a -u "$VIP:5060" -r 192.168.30.111:5060 -g -w 1
must director ipvsadm -A -u "$VIP:53" -s rr -o
must director ipvsadm -A -f 1 -s rr -p 300 -M 255.255.255.0
must director ipvsadm -a -f 1 -r 192.168.30.111 -g -w 1
cap ipvsadm-a.fwmark-port-0 director ipvsadm -a -f 1 -r 192.168.30.112:0 -g -w 1 -x 10 -y 5
cap ipvsadm-a.fwmark-port director ipvsadm -a -f 1 -r 192.168.30.113:8080 -g -w 1
cap ipvsadm-a.fwmark-nat-port director ipvsadm -a -f 1 -r 192.168.30.114:8080 -m -w 1
must director ipvsadm -A -f 3 -s rr -p 300 -M 16
must director ipvsadm -A -f 2 -6 -s wrr -p 60 -M 64
must director ipvsadm -a -f 2 -6 -r 2001:db8::12 -g -w 1
cap ipvsadm-S-n.options director ipvsadm -S -n
cap ipvsadm-L-n.options director ipvsadm -L -n
cap ipvsadm-L-n-thresholds.options director ipvsadm -L -n --thresholds
cap ipvsadm-L-n-persistent-conn.options director ipvsadm -L -n --persistent-conn

# -E and -e say everything: what they are not told is reset
must director ipvsadm -E -u "$VIP:5060" -s rr -p 60
must director ipvsadm -E -t "$VIP:80" -s mh
must director ipvsadm -e -t "$VIP:80" -r 192.168.30.111:80 -g -w 1
must director ipvsadm -E -f 1 -s rr -p 300
cap ipvsadm-S-n.options-edited director ipvsadm -S -n

# --- what ipvsadm refuses ---------------------------------------------------------------
cap ipvsadm-A.pe-nosuch director ipvsadm -A -u "$VIP:5061" -s rr -p 60 --pe nosuch
cap ipvsadm-A.pe-sip-no-persistence director ipvsadm -A -u "$VIP:5062" -s rr --pe sip
cap ipvsadm-A.pe-sip-tcp director ipvsadm -A -t "$VIP:5063" -s rr -p 60 --pe sip
cap ipvsadm-A.flag-other-scheduler director ipvsadm -A -t "$VIP:82" -s rr -b sh-port
cap ipvsadm-A.flag-nosuch director ipvsadm -A -t "$VIP:82" -s sh -b nosuch
cap ipvsadm-A.one-packet-tcp director ipvsadm -A -t "$VIP:83" -s rr -o
cap ipvsadm-A.netmask-without-persistence director ipvsadm -A -t "$VIP:84" -s rr -M 255.255.255.0
cap ipvsadm-a.lower-above-upper director ipvsadm -a -t "$VIP:81" -r 192.168.30.111:81 -g -w 1 -x 5 -y 9
# A kernel without the module: unloaded here, and this guest has no modprobe to load it back
must director ipvsadm -D -u "$VIP:5060"
rmmod ip_vs_pe_sip && echo "ip_vs_pe_sip unloaded"
cap ipvsadm-A.pe-sip-module-missing director ipvsadm -A -u "$VIP:5064" -s rr -p 60 --pe sip
must director ipvsadm -D -t "$VIP:80"
rmmod ip_vs_mh && echo "ip_vs_mh unloaded"
cap ipvsadm-A.scheduler-module-missing director ipvsadm -A -t "$VIP:85" -s mh
ls /sys/module | grep -E '^ip_vs' > "$OUT/sys-module-ip_vs.txt"
ls "/lib/modules/$(uname -r)" > "$OUT/lib-modules.txt" 2>&1

# --- nftables: the table lvs_scripts owns ------------------------------------------------
cap nft-list-tables.empty director nft list tables
TMP=$(mktemp -d)
cat > "$TMP/create.nft" <<NFT
create table ip lvs_scripts
table ip lvs_scripts {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		ip daddr $VIP tcp dport 80 meta mark set 1
		ip daddr $VIP tcp dport 443 meta mark set 1
		ip daddr 192.168.30.253 udp dport 53 meta mark set 0x2
		ip daddr 192.168.30.253 sctp dport 3868 meta mark set 4294967295
	}
}
NFT
capin nft-f.create director "$TMP/create.nft" nft -f -
cap nft-list-tables.ours director nft list tables
cap nft-list-table-ip-lvs_scripts director nft list table ip lvs_scripts
cap nft-list-ruleset.ours director nft list ruleset
capin nft-f.create-exists director "$TMP/create.nft" nft -f -
cat > "$TMP/replace.nft" <<NFT
table ip lvs_scripts
delete table ip lvs_scripts
table ip lvs_scripts {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		ip daddr $VIP tcp dport 8080 meta mark set 7
	}
}
NFT
capin nft-f.replace director "$TMP/replace.nft" nft -f -
cap nft-list-table-ip-lvs_scripts.replaced director nft list table ip lvs_scripts
cat > "$TMP/v6.nft" <<NFT
create table ip6 lvs_scripts
table ip6 lvs_scripts {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		ip6 daddr 2001:db8::1 tcp dport 80 meta mark set 2
	}
}
NFT
capin nft-f.create-ip6 director "$TMP/v6.nft" nft -f -
cap nft-list-table-ip6-lvs_scripts director nft list table ip6 lvs_scripts
cat > "$TMP/bad.nft" <<NFT
table ip lvs_scripts {
	chain prerouting {
		ip daddr $VIP tcp dport 80 meta mark set nosuch
	}
}
NFT
capin nft-f.syntax-error director "$TMP/bad.nft" nft -f -
cap nft-list-table.missing director nft list table ip lvs_other
cap nft-delete-table.ours director nft delete table ip lvs_scripts
cap nft-delete-table.missing director nft delete table ip lvs_scripts
cap nft-delete-table-ip6.ours director nft delete table ip6 lvs_scripts
cap nft-list-tables.after director nft list tables
cap nft-list-ruleset.empty director nft list ruleset
cap nft-version director nft --version
# A user without CAP_NET_ADMIN (dry run as non-root)
cap nft-list-tables.nobody director setpriv --reuid=65534 --regid=65534 --clear-groups nft list tables

uname -r > "$OUT/KERNEL"
ipvsadm --version > "$OUT/IPVSADM" 2>&1
bash "$HERE/topology.sh" down
echo "capture: done, $(wc -l < "$OUT/MANIFEST.tsv") commands"
