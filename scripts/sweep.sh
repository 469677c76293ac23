#!/usr/bin/env bash
# A grid of charlm trainings under one fixed time budget each, and the table of their final
# validation losses: which settings give the best model for the same CPU time.
#
#   scripts/sweep.sh --config configs/tinyshakespeare.ini --time-limit 300 \
#       --set-grid optim.lr=1e-3,2e-3,4e-3 --set-grid model.dropout=0,0.1 [-- charlm train args]
#   scripts/sweep.sh ... --slurm [--sbatch "--ntasks-per-node=4 --time=00:30:00"]
#   scripts/sweep.sh --table runs/sweep     # the table of a sweep (after --slurm, or again)
#
# Every combination of the grid's values (the product of the --set-grid keys, in the order
# given, the last key varying fastest) is one run in DIR/NNN (NNN = 000, 001, ...), trained with
#   charlm train --config CONFIG --set train.time_limit=S --run-dir DIR/NNN [args after --]
#                --set KEY=VALUE ... (the combination's, last: they win)
# DIR/NNN/args holds those arguments, one a line, and DIR/grid.tsv the combinations.
#
# Options:
#   --config FILE      the base configuration (repeatable, applied in order)
#   --set-grid K=V,... a key and its values (repeatable); a value cannot contain a comma
#   --time-limit S     train.time_limit of every run, seconds (default 60): the fixed budget
#   --dir DIR          where the runs go (default runs/sweep); it must not exist yet
#   --np N             ranks per run, locally (mpiexec -np N; default 1: no mpiexec)
#   --slurm            submit the grid as one SLURM array job of scripts/slurm/charlm.sbatch
#                      (task i trains DIR/i; each task checkpoints and requeues itself as that
#                      script does) and return; print the table with --table DIR once it is done
#   --sbatch "ARGS"    more sbatch options for --slurm (split at spaces), e.g. the ranks per task
#   --table DIR        only print the table of the sweep in DIR
# Environment: CHARLM_BIN (default build/charlm of this repository, else charlm on PATH),
# MPIEXEC (default mpiexec).
#
# Locally the runs train one after another. The table has one row per run: its settings, the
# steps it trained, why it stopped (the summary's "stop": steps, time limit, early stop), the
# last and the best validation loss (nats/char), and a * at the lowest last loss. A run that did
# not finish shows its exit status (or "running" / "not started" for a SLURM sweep). The exit
# status is 0 when every run finished, 1 when one did not, 2 for a bad command line.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
say() { echo "sweep.sh: $*" >&2; }
usage() {
    say "$1"
    say "usage: sweep.sh --set-grid KEY=V1,V2,... [--set-grid ...] [--config FILE]" \
        "[--time-limit S] [--dir DIR] [--np N] [--slurm [--sbatch ARGS]] [-- ARGS] |" \
        "--table DIR"
    exit 2
}

configs=() grid_keys=() grid_vals=() extra=()
limit=60 dir=runs/sweep np=1 slurm=0 sbatch_args="" table=""
while (($#)); do
    case "$1" in
        --config | --set-grid | --time-limit | --dir | --np | --sbatch | --table)
            (($# >= 2)) || usage "$1 needs a value"
            case "$1" in
                --config) configs+=("$2") ;;
                --set-grid)
                    [[ "$2" =~ ^[a-z_]+\.[a-z_]+=[^,]+(,[^,]+)*$ ]] ||
                        usage "--set-grid $2: expected section.key=V1,V2,..."
                    grid_keys+=("${2%%=*}")
                    grid_vals+=("${2#*=}")
                    ;;
                --time-limit)
                    [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ && "$2" != 0 ]] ||
                        usage "--time-limit $2: expected seconds > 0"
                    limit="$2"
                    ;;
                --dir) dir="$2" ;;
                --np) [[ "$2" =~ ^[1-9][0-9]*$ ]] || usage "--np $2: expected a count"; np="$2" ;;
                --sbatch) sbatch_args="$2" ;;
                --table) table="$2" ;;
            esac
            shift 2
            ;;
        --slurm) slurm=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage "unknown argument '$1'" ;;
    esac
done

# The value of "key" in the JSON line $1 (numbers and strings), or "".
field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1"; }

# Prints the table of the sweep in $1; returns 1 when some run did not finish.
print_table() {
    local d="$1" header rows=() best="" best_loss="" incomplete=0 i
    [[ -f "$d/grid.tsv" ]] || { say "$d/grid.tsv: not a sweep directory"; return 2; }
    header=$(head -n 1 "$d/grid.tsv")
    while IFS=$'\t' read -r -a cols; do
        local run="${cols[0]}" m="$d/${cols[0]}/metrics.jsonl" status last="" bestv="" steps="-"
        local stop="-" s v
        # a local run's exit status; a SLURM task's is in its output file: its metrics tell
        status=$(cat "$d/$run/status" 2>/dev/null)
        if [[ -z "$status" ]]; then
            status="not started"
            [[ -f "$m" ]] && status=running
            [[ -f "$m" ]] && grep -q '"summary":true' "$m" && status=0
        fi
        if [[ -f "$m" ]]; then
            while IFS= read -r line; do
                v=$(field "$line" val_loss)
                if [[ -n "$v" ]]; then
                    last="$v"
                    if [[ -z "$bestv" ]] || awk "BEGIN{exit !($v < $bestv)}"; then bestv="$v"; fi
                fi
                s=$(field "$line" step)
                [[ -n "$s" ]] && steps="$s"
                [[ "$line" == *'"summary":true'* ]] && stop=$(field "$line" stop)
            done <"$m"
        fi
        [[ "$stop" == "-" && "$status" == "0" ]] && status="no summary"
        if [[ "$status" != "0" ]]; then
            incomplete=1
            [[ "$status" =~ ^[0-9]+$ ]] && stop="exit $status" || stop="$status"
        fi
        if [[ -n "$last" && "$status" == "0" ]] &&
            { [[ -z "$best_loss" ]] || awk "BEGIN{exit !($last < $best_loss)}"; }; then
            best="$run" best_loss="$last"
        fi
        rows+=("$(printf '%s\t' "${cols[@]}")$steps	$stop	${last:--}	${bestv:--}")
    done < <(tail -n +2 "$d/grid.tsv")
    {
        printf '%s\tsteps\tstop\tval_loss\tbest_val\t\n' "$header"
        for i in "${!rows[@]}"; do
            printf '%s\t%s\n' "${rows[$i]}" "$([[ "${rows[$i]%%	*}" == "$best" ]] && echo '*')"
        done
    } | column -t -s $'\t'
    return "$incomplete"
}

if [[ -n "$table" ]]; then
    print_table "$table"
    exit $?
fi
((${#grid_keys[@]})) || usage "no --set-grid"
[[ -e "$dir" ]] && usage "--dir $dir exists already: choose another (or print it: --table $dir)"

bin="${CHARLM_BIN:-}"
if [[ -z "$bin" ]]; then
    if [[ -x "$repo/build/charlm" ]]; then bin="$repo/build/charlm"; else bin=$(command -v charlm); fi
fi
[[ -n "$bin" && -x "$bin" ]] || { say "charlm binary '$bin' not found (set CHARLM_BIN)"; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# The combinations: index i in mixed radix over the keys' value counts, the last key fastest.
total=1 counts=()
for v in "${grid_vals[@]}"; do
    IFS=, read -r -a vs <<<"$v"
    counts+=("${#vs[@]}")
    total=$((total * ${#vs[@]}))
done
mkdir -p "$dir" || exit 1
dir=$(cd "$dir" && pwd)
(IFS=$'\t'; echo "run	${grid_keys[*]}") >"$dir/grid.tsv"
for ((i = 0; i < total; i++)); do
    run=$(printf '%03d' "$i") rest=$i row=() sets=()
    for ((k = ${#grid_keys[@]} - 1; k >= 0; k--)); do
        IFS=, read -r -a vs <<<"${grid_vals[$k]}"
        row=("${vs[$((rest % counts[k]))]}" "${row[@]}")
        rest=$((rest / counts[k]))
    done
    for k in "${!grid_keys[@]}"; do sets+=(--set "${grid_keys[$k]}=${row[$k]}"); done
    mkdir -p "$dir/$run"
    args=()
    for c in "${configs[@]}"; do args+=(--config "$(cd "$(dirname "$c")" && pwd)/$(basename "$c")"); done
    args+=(--set "train.time_limit=$limit" --run-dir "$dir/$run" "${extra[@]}" "${sets[@]}")
    printf '%s\n' "${args[@]}" >"$dir/$run/args"
    (IFS=$'\t'; echo "$run	${row[*]}") >>"$dir/grid.tsv"
done

if ((slurm)); then
    # charlm.sbatch runs `BIN train --config CONFIG --resume auto`; BIN is a wrapper that adds
    # the array task's arguments (every rank reads the same file). charlm.sbatch's CONFIG is the
    # first --config (or an empty one); the others travel in the task's arguments.
    first="$dir/empty.ini"
    : >"$first"
    wrapper="$dir/charlm-task"
    cat >"$wrapper" <<EOF
#!/usr/bin/env bash
# written by scripts/sweep.sh: charlm with the arguments of array task \$SLURM_ARRAY_TASK_ID
mapfile -t task < "$dir/\$(printf %03d "\$SLURM_ARRAY_TASK_ID")/args"
exec "$bin" "\$@" "\${task[@]}"
EOF
    chmod +x "$wrapper"
    # shellcheck disable=SC2086 # sbatch_args is a list of words
    CHARLM_BIN="$wrapper" sbatch --array="0-$((total - 1))" --output="$dir/slurm-%A_%a.out" \
        $sbatch_args "$here/slurm/charlm.sbatch" "$first" || exit 1
    say "$total runs submitted; the table when they are done: scripts/sweep.sh --table $dir"
    exit 0
fi

for ((i = 0; i < total; i++)); do
    run=$(printf '%03d' "$i")
    mapfile -t args <"$dir/$run/args"
    cmd=("$bin" train "${args[@]}")
    ((np > 1)) && cmd=("${MPIEXEC:-mpiexec}" -np "$np" "${cmd[@]}")
    say "run $run of $total: $(sed -n "$((i + 2))p" "$dir/grid.tsv" | cut -f 2- | tr '\t' ' ')"
    "${cmd[@]}" >"$dir/$run/stdout" 2>"$dir/$run/stderr" </dev/null
    echo $? >"$dir/$run/status"
done
print_table "$dir"
