#!/bin/bash
# Install (or upgrade) the shilian edge agent on Raspberry Pi OS / Debian. Idempotent: running it
# again upgrades the package and keeps the user, the node's key, config and outbox.
#
#   sudo deploy/install.sh --source shilian-0.1.0-py3-none-any.whl     # or a source directory
#
# Creates: system user (default shilian, in group dialout for the serial alarm board);
#   /etc/shilian          root:shilian 0750   configuration (ConfigurationDirectory=)
#   /etc/shilian/node     shilian:shilian 0700   node key, certificates, edge.toml (provisioning)
#   /var/lib/shilian      shilian:shilian 0750   outbox (StateDirectory=)
#   /var/log/shilian      shilian:shilian 0750   (LogsDirectory=; the agent logs to the journal)
#   /opt/shilian/venv     root 0755              virtualenv with the package
#   /etc/systemd/system/shilian-edge.service, /etc/systemd/journald.conf.d/shilian.conf
# Options:
#   --root DIR       install into DIR (DESTDIR-style; the user is added to DIR/etc/passwd and
#                    DIR/etc/group, which must exist); implies nothing about systemctl
#   --no-systemctl   do not run systemctl (daemon-reload, enable, restart)
#   --user NAME      service user (default shilian)
#   --python PY      interpreter for the virtualenv (default python3, >= 3.11)
#   --config FILE    an edge.toml to install as /etc/shilian/node/edge.toml if there is none
#   --pip-args ARGS  extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels"
set -euo pipefail

SOURCE=""
ROOT=""
SYSTEMCTL=1
USER_NAME=shilian
PYTHON=python3
CONFIG=""
PIP_ARGS=""
PREFIX=/opt/shilian
HERE=$(cd "$(dirname "$0")" && pwd)

die() {
    echo "错误 / error: $*" >&2
    exit 2
}
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --source) SOURCE=${2:?}; shift 2 ;;
    --root) ROOT=${2:?}; shift 2 ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --user) USER_NAME=${2:?}; shift 2 ;;
    --python) PYTHON=${2:?}; shift 2 ;;
    --config) CONFIG=${2:?}; shift 2 ;;
    --pip-args) PIP_ARGS=${2?}; shift 2 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) die "未知参数 / unknown argument: $1" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "需要 root 权限（sudo）/ run as root (sudo)"
[ -n "$SOURCE" ] || die "请用 --source 指定 wheel 或源码目录 / give --source WHEEL_OR_DIR"
[ -e "$SOURCE" ] || die "找不到 / not found: $SOURCE"
SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
case "$USER_NAME" in
[a-z_]*) ;;
*) die "用户名无效 / invalid user name: $USER_NAME" ;;
esac
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "找不到配置 / config not found: $CONFIG"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "需要 Python 3.11 或更高 / Python >= 3.11 needed: $PYTHON"

R=${ROOT%/}
ETC=$R/etc
if [ ! -f "$ETC/passwd" ] || [ ! -f "$ETC/group" ]; then
    die "需要 $ETC/passwd 与 $ETC/group / $ETC/passwd and $ETC/group needed (--root: seed them)"
fi
# useradd/groupadd/usermod --prefix edit DIR/etc/* without chrooting (no binaries needed there).
ACCT=()
[ -z "$R" ] || ACCT=(--prefix "$R")

# -- user ---------------------------------------------------------------------------------------
has_entry() { grep -q "^$1:" "$2"; }
if ! has_entry dialout "$ETC/group"; then
    say "groupadd dialout"
    groupadd "${ACCT[@]}" --system dialout
fi
if ! has_entry "$USER_NAME" "$ETC/passwd"; then
    say "useradd $USER_NAME"
    useradd "${ACCT[@]}" --system --user-group --home-dir /var/lib/shilian --no-create-home \
        --shell /usr/sbin/nologin --comment "shilian edge agent" "$USER_NAME"
fi
usermod "${ACCT[@]}" --append --groups dialout "$USER_NAME"
uid=$(awk -F: -v u="$USER_NAME" '$1 == u { print $3 }' "$ETC/passwd")
gid=$(awk -F: -v u="$USER_NAME" '$1 == u { print $4 }' "$ETC/passwd")
if [ -z "$uid" ] || [ -z "$gid" ]; then die "用户未建立 / user not created: $USER_NAME"; fi

# -- directories (modes and owners re-applied on every run) ----------------------------------
say "directories"
install -d -m 0755 -o 0 -g 0 "$R$PREFIX" "$ETC/systemd/system" "$ETC/systemd/journald.conf.d"
install -d -m 0750 -o 0 -g "$gid" "$ETC/shilian"
install -d -m 0700 -o "$uid" -g "$gid" "$ETC/shilian/node"
install -d -m 0750 -o "$uid" -g "$gid" "$R/var/lib/shilian" "$R/var/log/shilian"

# -- virtualenv + package ------------------------------------------------------------------------
VENV=$R$PREFIX/venv
if [ ! -x "$VENV/bin/python" ]; then
    say "virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
say "pip install $SOURCE"
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade $PIP_ARGS "$SOURCE"
"$VENV/bin/shilian" --help >/dev/null || die "安装后无法运行 shilian / shilian does not run"
if [ -f "$HERE/../docs/install.md" ]; then
    install -d -m 0755 "$R$PREFIX/doc"
    install -m 0644 "$HERE/../docs/install.md" "$R$PREFIX/doc/install.md"
fi

# -- config (never overwritten: it is the provisioned node's) ------------------------------------
NODE_CONF=$ETC/shilian/node/edge.toml
if [ -n "$CONFIG" ] && [ ! -e "$NODE_CONF" ]; then
    "$VENV/bin/shilian" edge check-config "$CONFIG" || die "配置无效 / invalid config: $CONFIG"
    install -m 0600 -o "$uid" -g "$gid" "$CONFIG" "$NODE_CONF"
fi

# -- systemd unit and journald limits -----------------------------------------------------------
say "systemd unit"
sed -e "s/^User=shilian$/User=$USER_NAME/" -e "s/^Group=shilian$/Group=$USER_NAME/" \
    "$HERE/shilian-edge.service" >"$ETC/systemd/system/shilian-edge.service.tmp"
chmod 0644 "$ETC/systemd/system/shilian-edge.service.tmp"
mv "$ETC/systemd/system/shilian-edge.service.tmp" "$ETC/systemd/system/shilian-edge.service"
install -m 0644 "$HERE/journald-shilian.conf" "$ETC/systemd/journald.conf.d/shilian.conf"
mkdir -p "$ETC/systemd/system/multi-user.target.wants"
ln -sfn /etc/systemd/system/shilian-edge.service \
    "$ETC/systemd/system/multi-user.target.wants/shilian-edge.service"

if [ "$SYSTEMCTL" = 1 ] && [ -z "$R" ]; then
    systemctl daemon-reload
    systemctl restart systemd-journald || true
    systemctl enable shilian-edge.service
    if [ -e "$NODE_CONF" ]; then
        systemctl restart shilian-edge.service
        say "已启动 / started: systemctl status shilian-edge"
    else
        say "尚未入网：先运行 provision，再 systemctl start shilian-edge"
        say "not provisioned yet: run provisioning, then systemctl start shilian-edge"
    fi
fi
say "完成 / done. 检查 / check: $PREFIX/venv/bin/shilian edge doctor --config /etc/shilian/node/edge.toml"
