#!/bin/sh
# The package tests of `cargo xtask vmtest-package`, started by
# vmtest-package.service once systemd (PID 1 here) has reached
# multi-user.target. The kernel console stays on ttyS0; everything from
# here on goes to ttyS1, which the host streams to the terminal. The last
# line is the marker the host reads the result from, as init.sh's:
#   VMTEST_EXIT=0              the package tests passed
#   VMTEST_EXIT=1 package      they failed
#   VMTEST_EXIT=2 WHAT         the VM could not run them
export HOME=/root LANG=C.UTF-8
exec </dev/null >/dev/ttyS1 2>&1
# The host shows the bytes as they come: no \r added to each \n.
stty -F /dev/ttyS1 -opost
# The host's sign of life (it gives up on a VM that never gets here).
echo "vmtest: $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s;" \
    "PID 1 is $(cat /proc/1/comm), $(systemctl --version | head -n 1)"

# By label: which NVMe disk is which changes from boot to boot. The
# payload's run.sh runs the tests and sets $result.
mkdir -p /vmtest
if mount -t ext4 -o ro LABEL=mvb-payload /vmtest; then
    . /vmtest/run.sh
else
    result="2 cannot mount the payload disk (label mvb-payload)"
fi
if [ "$result" != 0 ]; then
    echo "--- the end of mvbridge.service's journal of this boot ---"
    journalctl -b -u mvbridge.service --no-pager -o short-monotonic | tail -n 80
fi
echo "VMTEST_EXIT=$result"

# Let the serial port drain the marker, then go: nothing in the VM is
# worth a clean shutdown (the root disk is a snapshot, the payload
# read-only).
sleep 1
echo o >/proc/sysrq-trigger
sleep 60
