# Sourced by the container scripts: podman settings this kind of machine needs. Inside a VM or
# container without CAP_SYS_RESOURCE, podman's default rlimits (nofile 1048576) cannot be set
# and crun refuses hybrid cgroups: use runc and limits at or below this shell's own.
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
conf=$(mktemp --suffix=.conf)
cat > "$conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$conf"
# Docker format: OCI images have no HEALTHCHECK.
PODMAN_BUILD_FLAGS=(--format docker --runtime runc --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
