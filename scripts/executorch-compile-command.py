"""Prints the shell command that compiles xnncache's XNNWeightsCache.cpp the
way an ExecuTorch tree configured with integrations/executorch/hook.cmake
would, with that tree's generated-header folders pointed at an already built
tree of the same sources and flags. Fails if the CMake lines did not replace
ExecuTorch's own file or did not add xnncache's include folder.

usage: executorch-compile-command.py compile_commands.json REPLACEMENT.cpp
       XNNCACHE_INCLUDE CONFIGURED_TREE BUILT_TREE OUTPUT.o
"""
import json
import shlex
import sys

db, src, inc, configured, built, out = sys.argv[1:]
stock = "backends/xnnpack/runtime/XNNWeightsCache.cpp"
entries = json.load(open(db))
if any(e["file"].endswith(stock) for e in entries):
    sys.exit("xnncache.cmake left ExecuTorch's " + stock + " in the build")
for e in entries:
    if e["file"] == src:
        args = shlex.split(e["command"])
        if "-I" + inc not in args:
            sys.exit("xnncache.cmake did not add -I" + inc)
        args[args.index("-o") + 1] = out
        args = [a.replace("-I" + configured + "/", "-I" + built + "/") for a in args]
        print("cd " + shlex.quote(built) + " && " + shlex.join(args))
        break
else:
    sys.exit(src + " is not compiled by the configured tree")
