#!/usr/bin/env bash
# bundle_mpi.sh DEST -- copy Debian 12's Open MPI 4.1 runtime (+ external PMIx,
# hwloc, libevent, munge, udev) into DEST so that `source DEST/env.sh; mpirun
# --allow-run-as-root --oversubscribe -np N ./prog` works on a machine WITHOUT
# Open MPI (single node; shared memory / loopback only).  Run on the build host
# (Debian 12, openmpi-bin + libopenmpi-dev installed).  Idempotent: DEST is rebuilt.
#
# Layout of DEST (flat and independent of Debian's multiarch paths; env.sh
# points every Open MPI / PMIx "installdirs" variable at it explicitly):
#   bin/            orterun (+ mpirun, mpiexec links), orted, ompi_info
#   lib/            libmpi, libopen-rte, libopen-pal, libmca_common_*, and
#                   external deps (hwloc, libevent, pmix, munge, udev)
#   lib/openmpi3/   Open MPI MCA plugins (transports needing ucx/ofi/verbs/psm dropped)
#   lib/hwloc/      intentionally empty hwloc plugin dir (see env.sh)
#   share/openmpi/  help texts;   etc/  openmpi-mca-params.conf
#   pmix/           PMIx plugins (lib/pmix), help texts (share/pmix), params file
set -euo pipefail

DEST=${1:?usage: $0 DEST}
command -v ompi_info >/dev/null || { echo "ompi_info not found (install openmpi-bin)" >&2; exit 1; }
ML=/usr/lib/x86_64-linux-gnu
# Ask Open MPI itself where it lives instead of hard-coding Debian's layout.
ompi_path() { ompi_info --path "$1" --parsable | sed -n "s/^path:$1://p" | head -n1; }
BINDIR=$(ompi_path bindir); PKGLIBDIR=$(ompi_path pkglibdir)
PKGDATADIR=$(ompi_path pkgdatadir); SYSCONFDIR=$(ompi_path sysconfdir)
# External PMIx root = directory above the resolved libpmix.so.2 (Debian: $ML/pmix2).
PMIX_ROOT=$(dirname "$(dirname "$(readlink -f "$ML/libpmix.so.2")")")

# Idempotent refresh, but never wipe a directory that is not one of our bundles.
if [[ -d $DEST && -n $(ls -A "$DEST") && ! -f $DEST/env.sh ]]; then
  echo "refusing to overwrite non-empty $DEST (no env.sh: not a bundle)" >&2; exit 1; fi
rm -rf "$DEST"
mkdir -p "$DEST"/{bin,lib/openmpi3,lib/hwloc,share/openmpi,etc,pmix/lib/pmix,pmix/share}
DEST=$(cd "$DEST" && pwd)

# Libraries a stock Ubuntu 24.04 image always has (glibc, zlib, gcc runtime):
# never bundled -- they must come from the target to match its glibc.
BASE=" libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1
 ld-linux-x86-64.so.2 libz.so.1 libgcc_s.so.1 libstdc++.so.6 "
needed() { objdump -p "$1" | awk '$1=="NEEDED"{print $2}'; }
# Copy a shared library under its SONAME (the name the loader looks for), by value.
copy_lib() { local so; so=$(objdump -p "$1" | awk '$1=="SONAME"{print $2}')
             cp -L "$1" "$DEST/lib/${so:-$(basename "$1")}"; }
# True if every NEEDED entry of $1 is in BASE or already in DEST/lib.
deps_ok() { local n; for n in $(needed "$1"); do
              [[ $BASE == *" $n "* || -e $DEST/lib/$n ]] || { MISSING=$n; return 1; }; done; }

# 1) Core libraries + their external dependencies (the closure below BASE).
for l in libmpi.so.40 libopen-rte.so.40 libopen-pal.so.40 libpmix.so.2 \
         libhwloc.so.15 libevent_core-2.1.so.7 libevent_pthreads-2.1.so.7 \
         libmunge.so.2 libudev.so.1; do
  copy_lib "$ML/$l"
done
# 2) Launcher binaries.  mpirun/mpiexec are orterun under another name.
cp -L "$BINDIR/orterun" "$BINDIR/orted" "$BINDIR/ompi_info" "$DEST/bin/"
ln -sf orterun "$DEST/bin/mpirun"; ln -sf orterun "$DEST/bin/mpiexec"
# 3) Helper libs used by some plugins (sm, ompio, monitoring); ucx/ofi/verbs
#    helpers fail deps_ok because their transports are not bundled.
for l in "$ML"/libmca_common_*.so.[0-9]*; do
  [[ -L $l ]] || continue                       # only the SONAME symlinks
  if deps_ok "$l"; then copy_lib "$l"; fi
done
# 4) MCA plugins: keep every component whose dependencies are satisfied; this
#    drops (by construction) btl openib/ofi/uct, mtl ofi/psm/psm2, pml/osc ucx,
#    reachable netlink (libnl) and the OpenSHMEM ones (liboshmem not bundled).
#    Everything else is small (~4 MB in total) and keeping it avoids guessing
#    which ess/plm/ras/rmaps/odls/state/errmgr... combination orterun needs.
dropped=()
for p in "$PKGLIBDIR"/*.so; do
  if deps_ok "$p"; then cp -L "$p" "$DEST/lib/openmpi3/"
  else dropped+=("$(basename "$p" .so)(${MISSING})"); fi
done
echo "dropped plugins: ${dropped[*]}"
# Sanity: the bundled core libs/binaries must resolve entirely in DEST + BASE.
for f in "$DEST"/lib/*.so* "$DEST"/bin/orterun "$DEST"/bin/orted "$DEST"/bin/ompi_info; do
  deps_ok "$f" || { echo "ERROR: $f needs $MISSING (not bundled)" >&2; exit 1; }
done
# 5) Help texts (without them errors print "Sorry! You were supposed to get help
#    about ...") and config files.
cp -r "$PKGDATADIR"/. "$DEST/share/openmpi/"
cp "$SYSCONFDIR"/openmpi-mca-params.conf "$SYSCONFDIR"/openmpi-default-hostfile "$DEST/etc/"
# 6) PMIx (external, 4.2): its dlopen'ed plugins and help texts.  Debian's
#    pmix-mca-params.conf hard-codes the system plugin path -> drop that line.
cp -L "$PMIX_ROOT"/lib/pmix/*.so "$DEST/pmix/lib/pmix/"
for p in "$DEST"/pmix/lib/pmix/*.so; do
  deps_ok "$p" || { echo "drop PMIx plugin $(basename "$p") ($MISSING)"; rm -f "$p"; }; done
cp -r "$PMIX_ROOT"/share/pmix "$DEST/pmix/share/"
grep -v '^ *mca_base_component_path' "$PMIX_ROOT"/share/pmix-mca-params.conf \
  > "$DEST/pmix/share/pmix-mca-params.conf" || true
strip --strip-unneeded "$DEST"/lib/*.so* "$DEST"/lib/openmpi3/*.so "$DEST"/pmix/lib/pmix/*.so \
  "$DEST"/bin/orterun "$DEST"/bin/orted "$DEST"/bin/ompi_info 2>/dev/null || true

# 7) env.sh: everything is derived from its own location at source time.
cat > "$DEST/env.sh" <<'EOF'
# source this file (bash): makes the bundled Open MPI self-contained, wherever it lies.
_MPI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$_MPI_ROOT/bin${PATH:+:$PATH}"
export LD_LIBRARY_PATH="$_MPI_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Open MPI 4.x relocation (opal installdirs "env" component).  OPAL_PREFIX alone
# is not enough for Debian's build: sysconfdir (/etc/openmpi) is absolute and
# libdir is prefix/lib/x86_64-linux-gnu/openmpi/lib; so set each directory.
export OPAL_PREFIX="$_MPI_ROOT" OPAL_EXEC_PREFIX="$_MPI_ROOT" OPAL_BINDIR="$_MPI_ROOT/bin"
export OPAL_LIBDIR="$_MPI_ROOT/lib" OPAL_PKGLIBDIR="$_MPI_ROOT/lib/openmpi3"
export OPAL_DATAROOTDIR="$_MPI_ROOT/share" OPAL_DATADIR="$_MPI_ROOT/share"
export OPAL_PKGDATADIR="$_MPI_ROOT/share/openmpi" OPAL_SYSCONFDIR="$_MPI_ROOT/etc"
# External PMIx 4.2 has its own installdirs (PMIX_PREFIX/..., not OPAL_*);
# plugin path set explicitly as well (env beats any pmix-mca-params.conf).
export PMIX_PREFIX="$_MPI_ROOT/pmix" PMIX_EXEC_PREFIX="$_MPI_ROOT/pmix"
export PMIX_LIBDIR="$_MPI_ROOT/pmix/lib" PMIX_PKGLIBDIR="$_MPI_ROOT/pmix/lib/pmix"
export PMIX_DATADIR="$_MPI_ROOT/pmix/share" PMIX_PKGDATADIR="$_MPI_ROOT/pmix/share/pmix"
export PMIX_SYSCONFDIR="$_MPI_ROOT/pmix/share"
export PMIX_MCA_mca_base_component_path="$_MPI_ROOT/pmix/lib/pmix"
# hwloc: use no plugins (an empty dir) so a target's own, possibly newer hwloc
# plugins (pci/opencl/cuda...) are never dlopen'ed into our libhwloc 2.9.
export HWLOC_PLUGINS_PATH="$_MPI_ROOT/lib/hwloc"
# Transport policy (defaults; pre-set values win): single node, shared memory
# (vader) + self, TCP over loopback only as fallback.  The heavy transports
# (ucx/ofi/openib/psm) are not bundled at all.
: "${OMPI_MCA_pml:=ob1}" "${OMPI_MCA_btl:=self,vader,tcp}"
: "${OMPI_MCA_btl_tcp_if_include:=lo}" "${OMPI_MCA_oob_tcp_if_include:=lo}"
# vader's CMA single-copy (process_vm_readv) fails in containers without
# CAP_SYS_PTRACE ("Read -1, expected ..., errno = 1"); plain copy-in/out is safe.
: "${OMPI_MCA_btl_vader_single_copy_mechanism:=none}"
# No ssh on the target: local launch only (plm isolated never looks for ssh/rsh).
: "${OMPI_MCA_plm:=isolated}"
# PMIx security: native (uid check) instead of probing for a munge daemon.
: "${PMIX_MCA_psec:=native}"
: "${OMPI_MCA_btl_base_warn_component_unused:=0}"
export OMPI_MCA_pml OMPI_MCA_btl OMPI_MCA_btl_tcp_if_include \
       OMPI_MCA_oob_tcp_if_include OMPI_MCA_btl_vader_single_copy_mechanism \
       OMPI_MCA_plm PMIX_MCA_psec OMPI_MCA_btl_base_warn_component_unused
unset _MPI_ROOT
EOF

echo "bundle: $DEST"
du -sh "$DEST"
