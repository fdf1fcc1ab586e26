#!/usr/bin/env bash
O=/tmp/phx/final2; mkdir -p $O
B=scripts/bench-executorch.sh
cd /work/wt-phone; git log --oneline -1; git status --short | head
bash $B --phonefs --programs-dir /tmp/llm_1b --programs llm_1b --threads 1,2 --repeat 5 --modes none,cold,warm,disk --json $O/phone-1b.json --markdown $O/phone-1b.md > $O/phone-1b.txt 2> $O/phone-1b.err; echo "phone-1b rc $?"
bash $B --programs-dir /tmp/llm_1b --programs llm_1b --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/ext4-1b.json --markdown $O/ext4-1b.md > $O/ext4-1b.txt 2> $O/ext4-1b.err; echo "ext4-1b rc $?"
cd /work/wt-after; bash $B --programs-dir /tmp/llm_1b --programs llm_1b --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/main-ext4-1b.json --markdown $O/main-ext4-1b.md > $O/main-ext4-1b.txt 2> $O/main-ext4-1b.err; echo "main-ext4-1b rc $?"
mkdir -p /dev/shm/llm_1b && cp /tmp/llm_1b/llm_1b.* /dev/shm/llm_1b/
cd /work/wt-phone; TMPDIR=/dev/shm bash $B --programs-dir /dev/shm/llm_1b --programs llm_1b --threads 2 --repeat 5 --modes none,cold,warm --json $O/tmpfs-1b.json --markdown $O/tmpfs-1b.md > $O/tmpfs-1b.txt 2> $O/tmpfs-1b.err; echo "tmpfs-1b rc $?"
cd /work/wt-after; TMPDIR=/dev/shm bash $B --programs-dir /dev/shm/llm_1b --programs llm_1b --threads 2 --repeat 5 --modes none,cold,warm --json $O/main-tmpfs-1b.json --markdown $O/main-tmpfs-1b.md > $O/main-tmpfs-1b.txt 2> $O/main-tmpfs-1b.err; echo "main-tmpfs-1b rc $?"
rm -rf /dev/shm/llm_1b
cd /work/wt-phone; bash $B --programs llm_q4 --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/ext4-q4.json --markdown $O/ext4-q4.md > $O/ext4-q4.txt 2> $O/ext4-q4.err; echo "ext4-q4 rc $?"
cd /work/wt-after; bash $B --programs llm_q4 --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/main-ext4-q4.json --markdown $O/main-ext4-q4.md > $O/main-ext4-q4.txt 2> $O/main-ext4-q4.err; echo "main-ext4-q4 rc $?"
cd /work/wt-phone; bash $B --phonefs --programs llm_q4 --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/phone-q4.json --markdown $O/phone-q4.md > $O/phone-q4.txt 2> $O/phone-q4.err; echo "phone-q4 rc $?"
cd /work/wt-after; bash $B --phonefs --programs llm_q4 --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/main-phone-q4.json --markdown $O/main-phone-q4.md > $O/main-phone-q4.txt 2> $O/main-phone-q4.err; echo "main-phone-q4 rc $?"
