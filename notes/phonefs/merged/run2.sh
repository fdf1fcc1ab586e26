#!/usr/bin/env bash
# Runs after the 5-round phone-class run, on main d020273 (phone and mobile merged).
O=/tmp/phx/merged; B=scripts/bench-executorch.sh
cd /work/main; git log --oneline -1
bash $B --phonefs --programs-dir /tmp/llm_1b --programs llm_1b --threads 2 --repeat 11 --modes none,cold,warm --json $O/phone-1b-11.json --markdown $O/phone-1b-11.md > $O/phone-1b-11.txt 2> $O/phone-1b-11.err; echo "phone-1b-11 rc $?"
bash $B --programs-dir /tmp/llm_1b --programs llm_1b --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/ext4-1b.json --markdown $O/ext4-1b.md > $O/ext4-1b.txt 2> $O/ext4-1b.err; echo "ext4-1b rc $?"
mkdir -p /dev/shm/llm_1b && cp /tmp/llm_1b/llm_1b.* /dev/shm/llm_1b/
TMPDIR=/dev/shm bash $B --programs-dir /dev/shm/llm_1b --programs llm_1b --threads 2 --repeat 5 --modes none,cold,warm --json $O/tmpfs-1b.json --markdown $O/tmpfs-1b.md > $O/tmpfs-1b.txt 2> $O/tmpfs-1b.err; echo "tmpfs-1b rc $?"
rm -rf /dev/shm/llm_1b
bash $B --programs llm_q4 --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/ext4-q4.json --markdown $O/ext4-q4.md > $O/ext4-q4.txt 2> $O/ext4-q4.err; echo "ext4-q4 rc $?"
bash $B --phonefs --programs llm_q4 --threads 2 --repeat 5 --modes none,cold,warm,disk --json $O/phone-q4.json --markdown $O/phone-q4.md > $O/phone-q4.txt 2> $O/phone-q4.err; echo "phone-q4 rc $?"
