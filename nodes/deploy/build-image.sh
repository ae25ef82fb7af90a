#!/usr/bin/env bash
# Builds the Limes container image with podman (or buildah) from a root file system that
# mmdebstrap makes of Debian's packages; no image registry is needed.
#
# usage: nodes/deploy/build-image.sh [TAG]      (default localhost/limes:VERSION)
# env:   PODMAN       the image tool and its options [podman --storage-driver vfs]
#        SUITE        the Debian suite of the root files [bookworm]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=$(awk -F'"' '/^version = / { print $2; exit }' "$root/Cargo.toml")
tag=${1:-localhost/limes:$version}
podman=${PODMAN:-podman --storage-driver vfs}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

(cd "$root" && cargo build --release -q -p limes-node)
# The binary without its debug sections (the release profile keeps them for profiling).
objcopy --strip-debug "$root/target/release/limes" "$ctx/limes"
mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1,netbase,tzdata \
  "${SUITE:-bookworm}" "$ctx/rootfs.tar"
echo "limes:x:10001:10001:Limes:/var/lib/limes:/usr/sbin/nologin" >"$ctx/passwd"
echo "limes:x:10001:" >"$ctx/group"
mkdir -p "$ctx/state"
$podman build --quiet --isolation chroot -t "$tag" -f "$here/Containerfile" "$ctx"
echo "$tag"
