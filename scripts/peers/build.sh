#!/usr/bin/env bash
# Builds the real programs twill is tested beside (scripts/peers/versions.env) with Go, through
# the module proxy, into a cache it reuses: /var/cache/twill-peers/<name>-<version>/ (override
# with TWILL_PEERS_CACHE). A program is built once per version; a failed build fails this script
# naming the module and version, and nothing is put in its place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${TWILL_PEERS_CACHE:-/var/cache/twill-peers}
say() { printf '[peers] %s\n' "$*"; }
fail() {
  printf '[peers] FAILED: %s\n' "$*" >&2
  exit 1
}

# The Go that machines of this project's kind ship lives in /usr/local/go; a login shell puts it
# on the PATH, a CI runner's environment may not.
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || fail "no Go toolchain on the PATH: flanneld ($FLANNELD_MODULE@$FLANNELD_VERSION), flannel's CNI plugin ($FLANNEL_CNI_MODULE@$FLANNEL_CNI_VERSION) and Kubernetes ($KUBERNETES_MODULE@$KUBERNETES_VERSION) cannot be built"
# Debian's golang-go is older than flanneld's go.mod asks for; Go fetches the toolchain it names
# through the same proxy.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} GOFLAGS=-mod=mod

# build NAME VERSION MODULE COMMAND...: runs COMMAND with $out set to the cache folder, unless
# that folder already holds NAME. COMMAND runs where `set -e` does not reach (an `if`), so its
# steps are chained with && and each one's failure is its own.
build() {
  local name=$1 version=$2 module=$3
  shift 3
  out="$cache/$name-$version"
  if [ -x "$out/$name" ]; then
    say "$name $version cached in $out"
    return
  fi
  say "building $name $version ($module) ..."
  local start=$SECONDS log
  log=$(mktemp)
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  if ! "$@" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$out.tmp" "$log"
    fail "$name: go could not build $module@$version (output above)"
  fi
  rm -f "$log"
  rm -rf "$out" && mv "$out.tmp" "$out"
  say "built $name $version in $((SECONDS - start)) s: $out/$name"
}

flanneld_build() {
  local src
  grep -q "^require $FLANNELD_MODULE $FLANNELD_VERSION\$" "$here/flanneld/go.mod" ||
    { echo "scripts/peers/flanneld/go.mod does not require $FLANNELD_MODULE $FLANNELD_VERSION, as versions.env says"; return 1; }
  # cgo as flannel's own Makefile builds it: the udp backend is written in C.
  (cd "$here/flanneld" && go build -trimpath -o "$out.tmp/flanneld" \
    -ldflags "-s -w -X $FLANNELD_MODULE/pkg/version.Version=$FLANNELD_VERSION" "$FLANNELD_MODULE") &&
    src=$(cd "$here/flanneld" && go list -m -f '{{.Dir}}' "$FLANNELD_MODULE") &&
    # mk-docker-opts.sh ships in the module; tests run flannel's own copy of it.
    install -m 0755 "$src/dist/mk-docker-opts.sh" "$out.tmp/mk-docker-opts.sh"
}

cni_build() {
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "$FLANNEL_CNI_PACKAGE@$FLANNEL_CNI_VERSION"
}

# kubernetes_build PROGRAM: one of the programs under k8s.io/kubernetes/cmd, built as Kubernetes'
# own hack/lib/golang.sh builds it (static, without cgo) and stamped as hack/lib/version.sh stamps
# a release, so that its --version names the release rather than v0.0.0-master. The build date is
# the release's own time in the module proxy, so a rebuild of one release stamps the same date.
kubernetes_build() {
  local program=$1 released minor ldflags key
  grep -q "^require $KUBERNETES_MODULE $KUBERNETES_VERSION\$" "$here/kubernetes/go.mod" ||
    { echo "scripts/peers/kubernetes/go.mod does not require $KUBERNETES_MODULE $KUBERNETES_VERSION, as versions.env says"; return 1; }
  released=$(cd "$here/kubernetes" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$KUBERNETES_MODULE") || return 1
  minor=${KUBERNETES_VERSION#v*.}
  minor=${minor%%.*}
  ldflags="-s -w"
  for key in "gitVersion=$KUBERNETES_VERSION" gitMajor=1 "gitMinor=$minor" "buildDate=$released"; do
    ldflags+=" -X k8s.io/client-go/pkg/version.$key -X k8s.io/component-base/version.$key"
  done
  # nice: a cold build of the three takes many CPU-minutes on machines shared with running tests.
  (cd "$here/kubernetes" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$ldflags" \
    -o "$out.tmp/$program" "$KUBERNETES_MODULE/cmd/$program")
}

build flanneld "$FLANNELD_VERSION" "$FLANNELD_MODULE" flanneld_build
build flannel "$FLANNEL_CNI_VERSION" "$FLANNEL_CNI_MODULE" cni_build
for program in kube-apiserver kube-controller-manager kubectl; do
  build "$program" "$KUBERNETES_VERSION" "$KUBERNETES_MODULE" kubernetes_build "$program"
done
# What a test asks of the binary it runs, checked once here so a bad build never reaches them.
got=$("$cache/flanneld-$FLANNELD_VERSION/flanneld" --version 2>&1) || true
[ "$got" = "$FLANNELD_VERSION" ] || fail "flanneld --version says '$got', expected $FLANNELD_VERSION"
for program in kube-apiserver kube-controller-manager; do
  got=$("$cache/$program-$KUBERNETES_VERSION/$program" --version 2>&1) || true
  [ "$got" = "Kubernetes $KUBERNETES_VERSION" ] || fail "$program --version says '$got', expected Kubernetes $KUBERNETES_VERSION"
done
got=$("$cache/kubectl-$KUBERNETES_VERSION/kubectl" version --client 2>&1 | head -1) || true
[ "$got" = "Client Version: $KUBERNETES_VERSION" ] || fail "kubectl version --client says '$got', expected Client Version: $KUBERNETES_VERSION"
