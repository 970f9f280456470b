#!/usr/bin/env bash
# Builds deploy/kubernetes/Containerfile into a local image with Debian's podman, with no
# container registry: the base both stages start FROM is made here from Debian packages by
# mmdebstrap (the minbase variant, which is what debian:bookworm-slim is) from the mirror
# apt uses on this machine, and imported into podman's storage. The stages install their own
# packages with apt and the pinned Node.js from the npm registry, so the build needs the network
# to those two only (--network host).
#
# Idempotent: the base is tagged by the hash of what makes it (suite, variant, apt sources) and
# made only when that tag is missing; the image carries the hash of its inputs (the base, the
# Containerfile, .containerignore and every file the Containerfile copies) as a label, and is
# built only when that label differs. --rebuild makes both again without podman's layer cache
# (to take a newer bookworm point release, say).
#
#   scripts/image/build.sh [--tag NAME:TAG (default localhost/twill:dev)] [--rebuild]
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=localhost/twill:dev
rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag)
      [[ "${2:-}" =~ ^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$ ]] || { echo "scripts/image/build.sh: --tag needs NAME:TAG, e.g. localhost/twill:dev (got '${2:-}')" >&2; exit 2; }
      tag=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    *) echo "scripts/image/build.sh: unknown argument '$1' (known: --tag NAME:TAG, --rebuild)" >&2; exit 2 ;;
  esac
done

say() { printf '[image] %s\n' "$*"; }
die() { echo "scripts/image/build.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap's root mode, podman's system storage the lab's agents run from)"
for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup.sh installs it from Debian)"
done

# runc, not crun: crun refuses cgroup v1/v2 hybrid hosts (this CI's machine is one), runc runs there.
podman() { command podman --runtime runc "$@"; }
# Podman's default limits for a container (1048576 open files, 4194304 processes) are above what
# a host without CAP_SYS_RESOURCE can grant, and podman caps its own process limit at 32768
# before it starts the runtime: the build's containers get the caller's own limits, within that.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

suite=bookworm
variant=minbase
# The mirror apt uses here: its own sources file, pasted as it is into the base (deb822 or one-line).
sources=
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  [ -s "$f" ] && grep -q '^[^#]*deb' "$f" && { sources=$f; break; }
done
[ -n "$sources" ] || die "no Debian apt sources in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list to make the base from"

# The Containerfile's COPY sources; .containerignore keeps the host's builds out of them.
inputs=(deploy/kubernetes/Containerfile .containerignore package.json package-lock.json tsconfig.json bin bpf controller maps scripts/runtime scripts/bundle-cni.mjs)

start=$SECONDS
base_hash=$(printf '%s\n' "$suite" "$variant" "$(cat "$sources")" | sha256sum | cut -c1-16)
base=localhost/twill-base:$suite-$base_hash
if [ "$rebuild" = 0 ] && podman image exists "$base"; then
  say "base $base present"
else
  say "making base $base: mmdebstrap --variant=$variant $suite from $sources"
  mkdir -p /var/cache/twill-image
  tarball=$(mktemp /var/cache/twill-image/base.XXXXXX.tar)
  trap 'rm -f "$tarball"' EXIT
  mmdebstrap --quiet --variant="$variant" "$suite" "$tarball" "$sources"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null
  rm -f "$tarball"
  say "base $base imported ($((SECONDS - start)) s)"
fi
base_id=$(podman image inspect --format '{{.Id}}' "$base")

# Tracked and untracked files alike (what podman would copy), without what git ignores.
mapfile -t files < <(git ls-files -co --exclude-standard -- "${inputs[@]}" | sort)
[ ${#files[@]} -gt 0 ] || die "none of the Containerfile's inputs found (run from a checkout of twill)"
image_hash=$(
  {
    echo "$base_id"
    for f in "${files[@]}"; do [ -f "$f" ] && sha256sum "$f"; done
  } | sha256sum | cut -c1-16
)
label=org.twill.inputs
# Where the npm registry is reached through a TLS-inspecting proxy (this CI's network), only the
# host's CA bundle trusts it: lent to the build's RUN steps as a volume, so it is in no layer.
ca=()
host_ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$host_ca" ] && ca=(--volume "$host_ca:/run/twill-build/host-ca.crt:ro" --build-arg NODE_EXTRA_CA_CERTS=/run/twill-build/host-ca.crt)
if [ "$rebuild" = 0 ] && [ "$(podman image inspect --format "{{index .Labels \"$label\"}}" "$tag" 2>/dev/null)" = "$image_hash" ]; then
  say "$tag is up to date (inputs $image_hash): nothing to build"
else
  say "building $tag from deploy/kubernetes/Containerfile on $base (inputs $image_hash)"
  t=$SECONDS
  # --pull=never: the base is local and nothing may come from a registry. The build stage is
  # tagged too (NAME-build:TAG): untagged, its layers, the build's cache (apt's packages, npm's
  # modules), would go with the earlier builds' leftovers pruned below.
  nocache=()
  [ "$rebuild" = 1 ] && nocache=(--no-cache)
  build=(podman build "${nocache[@]}" --runtime runc "${ulimits[@]}" --pull=never --network host --build-arg "BASE=$base" "${ca[@]}" -f deploy/kubernetes/Containerfile)
  nice "${build[@]}" --target build -t "${tag%:*}-build:${tag##*:}" .
  nice "${build[@]}" --label "$label=$image_hash" -t "$tag" .
  say "built $tag ($((SECONDS - t)) s)"
  # Each build leaves the previous one's layers unnamed, hundreds of MB a time on a machine that
  # builds every commit.
  podman image prune --force >/dev/null
fi
say "summary: $tag $(podman image inspect --format '{{.Id}}' "$tag" | cut -c1-12), base $base, inputs $image_hash, $((SECONDS - start)) s"
