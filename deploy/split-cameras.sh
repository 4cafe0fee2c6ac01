#!/bin/sh
# Gives one worker replica its share of a camera list, as `--input NAME=URL` arguments.
#
#   split-cameras.sh LIST ORDINAL COUNT                  print the share, one `--input NAME=URL` a line
#   split-cameras.sh LIST ORDINAL COUNT -- CMD [ARG...]  exec CMD ARG... --input NAME=URL ...
#
# LIST: one camera a line, `NAME=URL` (NAME as `--input` wants it: [A-Za-z0-9_-]+); blank lines
#       and lines starting with `#` are skipped.
# ORDINAL: this replica's number, 0 to COUNT-1, or a StatefulSet pod name (`sapiens-worker-2`),
#       whose trailing number is used: the pod name is all a pod knows of its place.
# COUNT: how many replicas share the list (the StatefulSet's `replicas`).
#
# Camera i (0-based, in list order, skipped lines not counted) goes to replica i mod COUNT, so the
# shares are disjoint, cover the list, and differ in size by at most one. Every replica reads the
# same list and computes the same split: no coordination between replicas is needed.
# POSIX sh only (the runtime image is Debian slim, whose /bin/sh is dash).
set -eu

die() {
    echo "split-cameras: $*" >&2
    exit 2
}

[ $# -ge 3 ] || die "usage: split-cameras.sh LIST ORDINAL COUNT [-- COMMAND [ARG...]]"
list=$1
ordinal=$2
count=$3
shift 3

# A pod name: keep what follows the last `-`.
case $ordinal in
    *[!0-9]*) ordinal=${ordinal##*-} ;;
esac
case $ordinal in
    '' | *[!0-9]*) die "ordinal '$2' is neither a number nor a name ending in -NUMBER" ;;
esac
case $count in
    '' | *[!0-9]*) die "count '$count' is not a number" ;;
esac
# Arithmetic in base 10 even with leading zeros (`08` would be octal, and invalid, to $(( ))).
ordinal=$(echo "$ordinal" | sed 's/^0*\(.\)/\1/')
count=$(echo "$count" | sed 's/^0*\(.\)/\1/')
[ "$count" -ge 1 ] || die "count must be at least 1"
# A replica past the count would silently get nothing while cameras go unserved elsewhere (a
# StatefulSet scaled without updating COUNT): fail loudly instead.
[ "$ordinal" -lt "$count" ] || die "ordinal $ordinal is not below the replica count $count (update COUNT with replicas)"
[ -r "$list" ] || die "cannot read camera list $list"

exec_mode=false
if [ $# -gt 0 ]; then
    [ "$1" = "--" ] || die "expected -- before the command, got '$1'"
    shift
    [ $# -gt 0 ] || die "no command after --"
    exec_mode=true
fi

index=0
mine=0
# `while ... done < file` runs in this shell (no pipe), so `set --` below keeps its effect.
while IFS= read -r line || [ -n "$line" ]; do
    # Surrounding blanks and a Windows line end are not part of a camera (parameter expansion
    # only: no process per line).
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    case $line in
        '' | '#'*) continue ;;
    esac
    case $line in
        *=*) ;;
        *) die "$list: '$line' is not NAME=URL" ;;
    esac
    name=${line%%=*}
    url=${line#*=}
    case $name in
        '' | *[!A-Za-z0-9_-]*) die "$list: camera name '$name' must be [A-Za-z0-9_-]+" ;;
    esac
    [ -n "$url" ] || die "$list: camera '$name' has no URL"
    if [ $((index % count)) -eq "$ordinal" ]; then
        mine=$((mine + 1))
        if $exec_mode; then
            # Appended to the command's own arguments as two words each, so URLs with `?` or `&`
            # reach the program untouched.
            set -- "$@" --input "$name=$url"
        else
            printf -- '--input %s=%s\n' "$name" "$url"
        fi
    fi
    index=$((index + 1))
done <"$list"

if [ "$mine" -eq 0 ]; then
    # Not fatal: with --http the program starts without inputs and waits for streams (POST /streams).
    echo "split-cameras: replica $ordinal of $count has no camera ($index in $list)" >&2
fi
if $exec_mode; then
    exec "$@"
fi
