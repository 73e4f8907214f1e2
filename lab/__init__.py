"""The lab: a throw-away VM with a real IPVS kernel, for tests and the demo.

The machines this project is developed and tested on run a kernel without
IPVS, so ``ipvsadm`` cannot work there. The lab boots Debian's own kernel
under QEMU (emulated, no KVM), shares the host's root file system into it
read-only with a writable overlay on top, and runs one command inside. The
network namespaces of ``lab/topology.sh`` then stand in for the client,
router, director and real servers of the original how-to.

Modules:

- ``prepare``: installs the host packages, fetches and caches the kernel,
  builds the initramfs (``python -m lab prepare``).
- ``vm``: boots the VM, runs one command, returns its exit code.
- ``__main__``: the command line (``python -m lab --help``).
- ``capture``: records real command outputs for the parser tests.

Standard library only: the lab must run before the project's venv exists.
"""
