#!/usr/bin/env bash
# Build the mlops images from services/Dockerfile, one target each, all with one tag.
#
#   ./build_docker_images.sh                  # every image
#   ./build_docker_images.sh train serve      # only these
#   ./build_docker_images.sh --load train     # build locally, then `minikube image load`
#   TAG=v1.2 ./build_docker_images.sh         # tag instead of `git describe`
#   REGISTRY=registry.example.com/mlops TAG=v1.2 MINIKUBE=0 ./build_docker_images.sh --push
#
# Every image is tagged mlops-<name>:<tag> (default: git describe --tags --always --dirty)
# and also mlops-<name>:latest, the tag the manifests in deployments/ use with
# imagePullPolicy IfNotPresent: a fresh build is what the next pod runs, and no manifest
# needs editing. To pin a build instead: kubectl set image ... mlops-<name>:<tag>.
#
# Where the images go (MINIKUBE=1, the default, and `minikube` on the PATH):
#   default  straight into minikube's Docker engine (eval "$(minikube docker-env)")
#   --load   into the local Docker engine, then copied with `minikube image load`
# With MINIKUBE=0, or without minikube, they stay in the local Docker engine.
#   --push   also tag each image $REGISTRY/mlops-<name>:<tag> and push it (a cluster of
#            several nodes pulls from there: the registry overlay, docs/kubernetes.md)
#
# Build arguments passed through when set: BASE_IMAGE (default python:3.12-slim) and
# TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu, the CPU wheels; the
# only index torch, torchvision and torchaudio come from, for train, batch-infer and
# serve; every other package comes from PyPI, pinned by hash in locks/).
# Other settings: DOCKER (default docker), MINIKUBE_PROFILE (default minikube),
# BUILD_NETWORK (e.g. host: the network of the RUN steps, `docker build --network`).
# The first failing build stops the script with a non-zero exit.
set -euo pipefail

ALL_IMAGES=(data-prep train batch-infer serve trade monitor dashboard orchestrator migrate mlflow)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKERFILE="$ROOT/services/Dockerfile"
DOCKER="${DOCKER:-docker}"
MINIKUBE="${MINIKUBE:-1}"
MINIKUBE_PROFILE="${MINIKUBE_PROFILE:-minikube}"
LOAD=0
PUSH=0

usage() {
    sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "Images: ${ALL_IMAGES[*]}"
}

die() {
    echo "build_docker_images.sh: $*" >&2
    exit 1
}

requested=()
while (($#)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --load) LOAD=1 ;;
        --push) PUSH=1 ;;
        --tag)
            [[ $# -ge 2 ]] || die "--tag needs a value"
            TAG="$2"
            shift
            ;;
        --tag=*) TAG="${1#--tag=}" ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) requested+=("$1") ;;
    esac
    shift
done

if ((${#requested[@]} == 0)); then
    requested=("${ALL_IMAGES[@]}")
fi
for name in "${requested[@]}"; do
    known=0
    for image in "${ALL_IMAGES[@]}"; do
        [[ "$name" == "$image" ]] && known=1
    done
    ((known)) || die "unknown image '$name'; known: ${ALL_IMAGES[*]}"
done

if [[ -z "${TAG:-}" ]]; then
    TAG="$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null)" \
        || die "cannot derive a tag with git describe; set TAG or pass --tag"
fi
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid image tag '$TAG'"
if ((PUSH)); then
    [[ -n "${REGISTRY:-}" ]] || die "--push needs REGISTRY (e.g. registry.example.com/mlops)"
    [[ "$REGISTRY" =~ ^[a-z0-9]([a-z0-9.:-]*[a-z0-9])?(/[a-z0-9._-]+)*$ ]] \
        || die "invalid REGISTRY '$REGISTRY' (host[:port][/path], lower case, no trailing /)"
fi

use_minikube=0
if [[ "$MINIKUBE" == "1" ]]; then
    if command -v minikube >/dev/null 2>&1; then
        use_minikube=1
    else
        echo "minikube is not on the PATH: building into the local Docker engine." >&2
    fi
fi
if ((use_minikube && !LOAD)); then
    echo "Building into minikube's Docker engine (profile $MINIKUBE_PROFILE)."
    docker_env="$(minikube -p "$MINIKUBE_PROFILE" docker-env --shell bash)" \
        || die "minikube docker-env failed: is minikube running? (minikube start)"
    eval "$docker_env"
fi

build_args=()
[[ -n "${BASE_IMAGE:-}" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n "${TORCH_INDEX_URL:-}" ]] && build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[[ -n "${BUILD_NETWORK:-}" ]] && build_args+=(--network "$BUILD_NETWORK")

export DOCKER_BUILDKIT=1
built=()
for name in "${requested[@]}"; do
    image="mlops-$name"
    remote=""
    echo "==> Building $image:$TAG (target $name)"
    "$DOCKER" build \
        --file "$DOCKERFILE" \
        --target "$name" \
        --tag "$image:$TAG" \
        --tag "$image:latest" \
        ${build_args[@]+"${build_args[@]}"} \
        "$ROOT" || die "building $image failed"
    if ((use_minikube && LOAD)); then
        echo "==> Loading $image:$TAG into minikube"
        minikube -p "$MINIKUBE_PROFILE" image load "$image:$TAG" \
            || die "minikube image load $image:$TAG failed"
        minikube -p "$MINIKUBE_PROFILE" image load "$image:latest" \
            || die "minikube image load $image:latest failed"
    fi
    if ((PUSH)); then
        remote="$REGISTRY/$image:$TAG"
        echo "==> Pushing $remote"
        "$DOCKER" tag "$image:$TAG" "$remote" || die "tagging $remote failed"
        "$DOCKER" push "$remote" || die "pushing $remote failed"
    fi
    size="$("$DOCKER" image inspect --format '{{.Size}}' "$image:$TAG" 2>/dev/null || echo '?')"
    built+=("$image:$TAG (also :latest${remote:+, pushed as $remote}) size=$size bytes")
done

echo
echo "Built ${#built[@]} image(s) with tag $TAG:"
for line in "${built[@]}"; do
    echo "  $line"
done
