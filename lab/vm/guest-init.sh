#!/bin/busybox sh
# /init of the lab's guest initramfs (written into the image by `cargo xtask lab --vm`).
# Settings come from the kernel command line as environment variables (names without
# dots): labip, labex, labnet, labflags, labprobe, labnoprobe, labtune.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Milestones on the guest's clock (seconds since its kernel started), for the boot's budget.
t() { echo "lab-t: $(cut -d' ' -f1 /proc/uptime) $1"; }
t init
if [ -n "$labprobe" ]; then
    echo "lab-probe-ok"
    poweroff -f
fi
for m in /modules/*.ko; do
    [ -e "$m" ] && insmod "$m" 2>/dev/null
done
IF=""
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    IF=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
    [ -n "$IF" ] && break
    sleep 0.2
done
t modules
echo "lab-iface: $IF"
ip link set lo up
ip addr add "$labip" dev "$IF"
ip link set "$IF" up
ip route add 224.0.0.0/4 dev "$IF"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do
    [ "$(cat /sys/class/net/$IF/carrier 2>/dev/null)" = "1" ] && break
    sleep 0.2
done
echo "lab-carrier: $(cat /sys/class/net/$IF/carrier 2>/dev/null)"
t carrier
if [ -n "$labshell" ]; then
    echo "lab: interactive guest; the strategy is /strategy, e.g."
    echo "  /strategy run --iface $IF --net $labnet --exchange $labex --reconnect"
    echo "lab: leave with 'poweroff -f' (or Ctrl-a x)"
    setsid cttyhack sh
    poweroff -f
fi
export PATH=/bin:/sbin
echo "lab-probe-begin"
# The first guest of each NIC in an experiment probes (3-5 s under TCG); the others, the
# same guest, are told to skip it (labnoprobe). The end marker is printed either way: the
# host counts the tap's drops from it.
[ -z "$labnoprobe" ] && /strategy probe --iface "$IF" 2>&1
echo "lab-probe-end"
t probe
if [ -n "$labtune" ]; then
    if [ -f "/tune/$labtune.sh" ]; then
        . "/tune/$labtune.sh" 2>&1
    else
        echo "lab-tune: no /tune/$labtune.sh"
    fi
fi
EXTRA=""
[ "$labnet" = packet ] && EXTRA="--packet-ip $labpktip"
# Every queue the NIC has gets an AF_XDP socket (one, unless a tuning variant set more or,
# for xdp-tx, the guest has a queue pair per vCPU).
{ [ "$labnet" = xdp ] || [ "$labnet" = xdp-tx ]; } && EXTRA="--xsk-queues all"
t strategy-start
/strategy run --iface "$IF" --net "$labnet" --exchange "$labex" --sessions 1 \
    --orders-out /orders.csv --results /results.jsonl $EXTRA $labflags > /strategy.out 2>&1
echo "lab-exit: $?"
t strategy-exit
tail -n 5 /strategy.out
echo "lab-orders-begin"
cat /orders.csv 2>/dev/null
echo "lab-orders-end"
echo "lab-results: $(cat /results.jsonl 2>/dev/null)"
# The guest itself (its emulated CPU, its kernel), after the session: the results
# folder's manifest.json keeps the first guest's.
echo "lab-machine: $(/strategy probe --machine 2>/dev/null)"
t poweroff
poweroff -f
