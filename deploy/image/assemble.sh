#!/bin/sh
# Lays out the root filesystem of the from-scratch image: the hawzu-gate
# binary, the shared libraries it links (as ldd names them: glibc, libm,
# libgcc_s and the loader), the system CA bundle, a passwd/group naming
# the non-root user 65532; and beside it an empty data/ that the
# Containerfile makes data_dir, owned by that user. Nothing else: no
# shell, no package manager. Needs no registry and no daemon, so it works
# where `docker build` (deploy/Dockerfile, which pulls rust and distroless
# base images) cannot.
#
#   cargo build --release --locked
#   deploy/image/assemble.sh target/release/hawzu-gate build/rootfs
#   buildah bud -f deploy/image/Containerfile -t hawzu-gate:0.1.0 build
#
# tests/image.rs builds and runs the image this way.
set -eu
bin=${1:?usage: assemble.sh <hawzu-gate binary> <rootfs dir>}
root=${2:?usage: assemble.sh <hawzu-gate binary> <rootfs dir>}

# data_dir is not in the root filesystem: the Containerfile copies an empty
# directory beside it (<context>/data) there, owned by the image's user.
data="$(dirname "$root")/data"
if [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
  echo "assemble.sh: $data is not empty; it becomes the image's data_dir (move its files away)" >&2
  exit 1
fi
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib" "$data"
install -m 0755 "$bin" "$root/usr/local/bin/hawzu-gate"

# Every library the binary loads, at the path the loader looks for it.
ldd "$bin" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# CA certificates, for an https upstream or rediss:// without a ca_file.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi

printf 'nonroot:x:65532:65532:nonroot:/var/lib/hawzu-gate:/sbin/nologin\n' > "$root/etc/passwd"
printf 'nonroot:x:65532:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
chmod 0700 "$data"
