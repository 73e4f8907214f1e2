#!/bin/sh
# /init of the lab's initramfs (busybox sh), built by lab/prepare.py.
#
# The guest has no disk: it runs the host's own programs and the checkout
# through the host's root file system, shared read-only over virtio-9p
# ("hostroot"), with a tmpfs overlay on top so that the guest can write
# anywhere while nothing reaches the host. A second share ("results") is the
# only way out: the command to run comes in through it (command.sh) and its
# exit code goes back through it (exit-code). Then the VM powers off.

PATH=/bin
export PATH
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "lab-init: FAILED: $*"
    poweroff -f
}

# Tunnel modules (ipip, ip_gre, ip6_tunnel) create a fallback device (tunl0, gre0,
# ip6tnl0...) in every namespace when loaded, unless told not to: the lab's hosts then
# start without them, as a real server in a container does, and lvs-realserver creates
# the device it needs.
echo 2 > /proc/sys/net/core/fb_tunnels_only_for_init_net

# No modprobe in here: prepare.py resolved the load order on the host.
# A module may refuse under emulation (crc32c-intel: "No such device");
# the next one in the list (crc32c_generic) stands in for it.
while read -r module; do
    insmod "/modules/$module" 2>/dev/null || echo "lab-init: module $module not loaded"
done < /modules/load-order

# cache=loose: the shared root is a read-only snapshot for the VM's short
# life, and caching it makes Python start several times faster.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
    || fail "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /host \
    || fail "cannot mount the overlay"

mount -t proc proc /host/proc
mount --bind /sys /host/sys
mount --bind /dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
# A fresh /run: the host's would show its sockets, pid files and netns.
mount -t tmpfs -o mode=0755 tmpfs /host/run
mkdir -p /host/run/netns /host/run/lock /host/run/lab-results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /host/run/lab-results \
    || fail "cannot mount the results share"

hostname lab
ip link set lo up

chroot /host /bin/sh /run/lab-results/command.sh < /dev/null
echo $? > /host/run/lab-results/exit-code
dmesg > /host/run/lab-results/dmesg.txt
sync
poweroff -f
