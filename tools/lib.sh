# Shell functions shared by the setup scripts (sourced, not run).

# apt_install_missing NAME PACKAGE...: install, with apt-get, those PACKAGEs dpkg does not list as
# installed; NAME prefixes the message.  Uses sudo when not root.
apt_install_missing() {
    local name=$1 package missing=() sudo=()
    shift
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "$name: installing ${missing[*]} with apt-get" >&2
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# lock_folder_of PATH: hold an exclusive lock on PATH's parent folder until this shell exits, so that
# two runs started at once (parallel test sessions) build one venv, not two half ones.
lock_folder_of() {
    mkdir -p "$(dirname "$1")"
    exec 9<"$(dirname "$1")"
    flock 9
}
