#!/bin/sh
# PID 1 of `cargo xtask vmtest`'s VM. The kernel console stays on ttyS0;
# everything from here on goes to ttyS1, which the host streams to the
# terminal. The last line is the marker the host reads the result from:
#   VMTEST_EXIT=0              every test binary passed
#   VMTEST_EXIT=1 NAME...      these test binaries failed
#   VMTEST_EXIT=2 WHAT         the VM could not run the tests
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root

# The cloud kernel does not mount devtmpfs by itself.
mount -t devtmpfs dev /dev
exec </dev/null >/dev/ttyS1 2>&1
# The host shows the bytes as they come: no \r added to each \n.
stty -F /dev/ttyS1 -opost
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The tests make their directories under /tmp; `ip netns` keeps its
# handles in /run/netns (/var/run links to /run).
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir /run/netns
hostname mvb-vm
ip link set lo up
# The host's sign of life (it gives up on a VM that never gets here).
echo "vmtest: $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
# Autoload would find these on first use; loaded here, a missing one
# shows once, by name, before any test runs.
modprobe -a veth macvlan macvtap tap tun bridge sch_ingress cls_bpf \
    nf_tables nft_compat nft_chain_nat nft_masq

failed=
# The payload's run.sh calls this once per test binary.
run_test() {
    name=$1
    shift
    echo "     Running tests/$name.rs"
    /vmtest/tests/"$name" "$@" || failed="$failed $name"
}

# By label: which NVMe disk is which changes from boot to boot.
if mount -t ext4 -o ro LABEL=mvb-payload /vmtest; then
    . /vmtest/run.sh
    if [ -z "$failed" ]; then result=0; else result="1$failed"; fi
else
    result="2 cannot mount the payload disk (label mvb-payload)"
fi
echo "VMTEST_EXIT=$result"

# Whatever a test left running must not hold ttyS1 open: closing its
# last descriptor waits until the marker is out on the wire.
kill -9 -1
sleep 0.2
exec >/dev/null 2>&1
# Nothing in the VM is worth a clean shutdown (the root disk is a
# snapshot, the payload read-only).
echo o >/proc/sysrq-trigger
sleep 60
