# bash completion for updaterctl. App names come from the running daemon.
_updaterctl_apps() {
    local sock=""
    local i
    for ((i = 1; i < ${#COMP_WORDS[@]}; i++)); do
        [[ ${COMP_WORDS[i]} == --socket ]] && sock="--socket ${COMP_WORDS[i+1]}"
    done
    # shellcheck disable=SC2086
    updaterctl $sock --json status 2>/dev/null | sed -n 's/.*"name": "\([^"]*\)".*/\1/p'
}

# Versions the daemon knows for APP, by what the word is for: skip (available, passed over),
# unskip (skipped, blocked), kept (rollback --to: kept on disk), any (update --version).
_updaterctl_versions() {
    local sock="" i
    for ((i = 1; i < ${#COMP_WORDS[@]}; i++)); do
        [[ ${COMP_WORDS[i]} == --socket ]] && sock="--socket ${COMP_WORDS[i+1]}"
    done
    # shellcheck disable=SC2086
    updaterctl $sock --complete-versions "$1" "$2" 2>/dev/null
}

_updaterctl() {
    local cur prev cmd i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    local commands="status check update rollback list-backups history skip unskip pause resume cancel watch inhibit reload metrics reset-failed prune"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --socket) ((i++)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [[ $prev == --socket ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    local app="" n=0
    for ((i = i + 1; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} == -* ]] && continue
        [[ ${COMP_WORDS[i-1]} == --to || ${COMP_WORDS[i-1]} == --version ]] && continue
        ((n++ == 0)) && app=${COMP_WORDS[i]}
    done
    if [[ -n $app ]]; then
        case "$cmd:$prev" in
            rollback:--to) COMPREPLY=($(compgen -W "$(_updaterctl_versions "$app" kept)" -- "$cur")); return ;;
            update:--version) COMPREPLY=($(compgen -W "$(_updaterctl_versions "$app" any)" -- "$cur")); return ;;
        esac
        if [[ $cur != -* && ($cmd == skip || $cmd == unskip) ]]; then
            COMPREPLY=($(compgen -W "$(_updaterctl_versions "$app" "$cmd")" -- "$cur"))
            return
        fi
    fi
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands --socket --json --json-schema --help --version" -- "$cur"))
        return
    fi
    case $cmd in
        status|check|update|rollback|list-backups|history|skip|unskip|pause|resume|cancel|watch|inhibit|reset-failed|prune)
            case $cur in
                -*)
                    local opts=""
                    case $cmd in
                        check) opts="--force --fresh" ;;
                        update) opts="--version --now --no-wait" ;;
                        rollback) opts="--to --with-data" ;;
                        history) opts="--limit" ;;
                        inhibit) opts="--why" ;;
                        prune) opts="--keep --force" ;;
                    esac
                    COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
                    ;;
                *) COMPREPLY=($(compgen -W "$(_updaterctl_apps)" -- "$cur")) ;;
            esac
            ;;
    esac
}
complete -F _updaterctl updaterctl
