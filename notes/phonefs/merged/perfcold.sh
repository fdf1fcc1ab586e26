#!/usr/bin/env bash
set -u
# The runners of a `bash scripts/bench-executorch.sh ... --keep` run (its work folder's bin/).
B=${B:-/tmp/xnncache-et-bench.3xmcbb/bin}
img=/tmp/phx/pc.img; rm -f $img; fallocate -l 4G $img; mkfs.ext4 -q -F $img
dev=$(losetup --direct-io=on -f --show $img); mnt=/tmp/phx/pc.mnt; mkdir -p $mnt
mount -o data=journal $dev $mnt; mkdir -p $mnt/p $mnt/f; cp /tmp/llm_1b/llm_1b.* $mnt/p/; sync -f $mnt
P=($mnt/p/llm_1b.pte $mnt/p/llm_1b.input.bin $mnt/p/llm_1b.expected.bin)
O=/tmp/phx/merged/perf; mkdir -p $O
for m in none cold; do
  sync -f $mnt; rm -f $mnt/f/c.cache; sync -f $mnt
  if [[ $m == none ]]; then a=(none); else a=(file $mnt/f/c.cache); fi
  perf record -q -a -F 997 -o $O/$m.data -- $B/runner-xnncache "${P[@]}" "${a[@]}" --runs 30 --threads 2 > $O/$m.json 2>/dev/null
  perf script -i $O/$m.data -F comm,tid,time > $O/$m.txt 2>/dev/null
done
umount $mnt; losetup -d $dev; rm -f $img
