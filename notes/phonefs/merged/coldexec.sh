#!/usr/bin/env bash
# Executes of a cold process on the phone-class fs: none, cold (yielding write-back), cold with the
# commit inside load_method (XNNCACHE_ET_SYNC_WRITEBACK=1: nothing in the background during executes).
set -u
# The runners of a `bash scripts/bench-executorch.sh ... --keep` run (its work folder's bin/).
B=${B:-/tmp/xnncache-et-bench.3xmcbb/bin}
img=/tmp/phx/coldexec.img; rm -f $img; fallocate -l 4G $img; mkfs.ext4 -q -F $img
dev=$(losetup --direct-io=on -f --show $img); mnt=/tmp/phx/coldexec.mnt; mkdir -p $mnt
mount -o data=journal $dev $mnt; mkdir -p $mnt/p $mnt/f; cp /tmp/llm_1b/llm_1b.* $mnt/p/; sync -f $mnt
P=($mnt/p/llm_1b.pte $mnt/p/llm_1b.input.bin $mnt/p/llm_1b.expected.bin)
O=/tmp/phx/merged/coldexec; mkdir -p $O
for r in 1 2 3 4 5 6 7; do
  for m in none cold sync; do
    sync -f $mnt; rm -f $mnt/f/c.cache; sync -f $mnt
    case $m in
      none) $B/runner-xnncache "${P[@]}" none --runs 20 --threads 2 > $O/$m.$r.json 2>/dev/null ;;
      cold) $B/runner-xnncache "${P[@]}" file $mnt/f/c.cache --runs 20 --threads 2 > $O/$m.$r.json 2>/dev/null ;;
      sync) XNNCACHE_ET_SYNC_WRITEBACK=1 $B/runner-xnncache "${P[@]}" file $mnt/f/c.cache --runs 20 --threads 2 > $O/$m.$r.json 2>/dev/null ;;
    esac
    echo "$r $m rc $?"
  done
done
umount $mnt; losetup -d $dev; rm -f $img
python3 - <<'PY'
import json, statistics as st
O='/tmp/phx/merged/coldexec'
for m in ('none','cold','sync'):
    runs=[json.loads(open(f'{O}/{m}.{r}.json').read().strip().splitlines()[-1]) for r in range(1,8)]
    each=[st.median(d['execute_ms'][i] for d in runs) for i in range(len(runs[0]['execute_ms']))]
    print(m, 'load %.0f'%st.median(d['load_method_ms'] for d in runs), 'first %.1f'%st.median(d['first_execute_ms'] for d in runs),
          'each', ' '.join('%.1f'%x for x in each), 'median-of-all %.1f'%st.median(x for d in runs for x in d['execute_ms']))
PY
