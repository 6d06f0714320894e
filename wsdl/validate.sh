#!/usr/bin/env bash
# Validate EWS SOAP messages against taskbridge's subset of the EWS schema (the folder of this script).
#
# usage: wsdl/validate.sh [-m body|envelope|both] [-q] FILE...
#   -m body      validate the first element inside soap:Body against messages.xsd + types.xsd;
#                a FILE whose root is not an Envelope (a bare <m:GetItem>, say) is validated as it is
#   -m envelope  validate the whole SOAP 1.1 envelope (support/soap11-envelope.xsd: strict Body, lax Header,
#                so the EWS headers declared in types.xsd are checked and other headers are skipped)
#   -m both      body, then envelope (the default)
#   -q           print only one verdict line per file
# A soap:Fault is not an EWS element: body mode skips it and envelope mode checks it.
# Exit status: 0 = every FILE valid in every mode asked for, 1 = some FILE invalid, 2 = usage or missing tool.
# Needs xmllint and xsltproc (Debian/Ubuntu packages libxml2-utils and xsltproc).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
body_schema="$here/ews-wrapper.xsd"
envelope_schema="$here/ews-envelope-wrapper.xsd"
extract="$here/support/body-child.xsl"

usage() {
    sed -n '4,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

mode=both
quiet=0
while getopts "m:qh" opt; do
    case $opt in
        m) mode=$OPTARG ;;
        q) quiet=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
case $mode in body | envelope | both) ;; *) echo "validate.sh: unknown mode '$mode'" >&2; usage ;; esac
[ $# -gt 0 ] || usage
for tool in xmllint xsltproc; do
    command -v "$tool" > /dev/null || { echo "validate.sh: $tool not found (install libxml2-utils and xsltproc)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# show_errors LOG LABEL: keep xmllint's messages (minus its summary lines, at most 12) for after the verdict.
show_errors() {
    [ "$quiet" = 1 ] && return
    grep -v -e ' validates$' -e ' fails to validate$' "$1" | sed "s#$work/body.xml#$2#" | head -n 12 |
        sed 's/^/      /' >> "$work/details"
}

# validate SCHEMA FILE LABEL -> 0 if valid
validate() {
    if xmllint --noout --schema "$1" "$2" > "$work/log" 2>&1; then
        return 0
    fi
    show_errors "$work/log" "$3"
    return 1
}

status=0
for file in "$@"; do
    verdict=OK
    notes=()
    : > "$work/details"
    if ! root=$(xmllint --xpath 'local-name(/*)' "$file" 2> "$work/log"); then
        echo "FAIL  $file  (not well-formed XML)"
        show_errors "$work/log" "$file"
        cat "$work/details"
        status=1
        continue
    fi

    if [ "$mode" != envelope ]; then
        if [ "$root" != Envelope ]; then
            cp "$file" "$work/body.xml"
        elif ! xsltproc "$extract" "$file" > "$work/body.xml" 2> "$work/log"; then
            : > "$work/body.xml"
            show_errors "$work/log" "$file"
        fi
        if [ ! -s "$work/body.xml" ]; then
            verdict=FAIL
            notes+=("body:missing")
        else
            payload=$(xmllint --xpath 'local-name(/*)' "$work/body.xml" 2> /dev/null)
            if [ "$payload" = Fault ]; then
                notes+=("body:skipped(soap:Fault)")
            elif validate "$body_schema" "$work/body.xml" "<Body>/$payload"; then
                notes+=("body($payload):ok")
            else
                verdict=FAIL
                notes+=("body($payload):INVALID")
            fi
        fi
    fi

    if [ "$mode" != body ]; then
        if [ "$root" != Envelope ]; then
            notes+=("envelope:skipped(no Envelope)")
        elif validate "$envelope_schema" "$file" "$file"; then
            notes+=("envelope:ok")
        else
            verdict=FAIL
            notes+=("envelope:INVALID")
        fi
    fi

    [ "$verdict" = OK ] || status=1
    printf '%-5s %s  %s\n' "$verdict" "$file" "${notes[*]}"
    cat "$work/details"
done
exit $status
