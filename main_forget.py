"""Unlearn a forget set from a trained model with one method, and evaluate it (UA, RA, TA, MIA, RTE).

    python main_forget.py --mask runs/orig/model.pt --unlearn FT --unlearn_lr 0.01 --unlearn_epochs 10 \
        --class_to_replace -1 --num_indexes_to_replace 4500 --save_dir runs/ft

The split is the model's own; the forget set is saved as forget_indices.npy; results.json holds config,
metrics and per-epoch history (--save_model also writes the unlearned model.pt). `--unlearn none`
evaluates the original model: the baseline row of every table. The seeds' commands (Unlearn-Sparse, SalUn,
RUM) run as written: --mask also takes foreign weights, RUM's --mem/--group_index/--beta/--gamma are spelled
here too, and docs/seed_commands.md maps the rest; --dry_run checks a command without running it.
"""
from unlearn.run import execute, make_context, real_loaders, start_run
from unlearn.setup import add_unlearn_args, dry_run, load_original, method_config
from utils import add_common_args, make_parser, run_cli, seed_everything


def main():
    p = make_parser(__doc__)
    add_unlearn_args(p)
    add_common_args(p)
    args = p.parse_args()
    model, record, data, device = load_original(args)
    method, cfg = method_config(args, record)
    if args.dry_run:
        return dry_run(args, data, cfg)
    run = start_run("main_forget.py", args, cfg, method, model, record, data, device)
    seed_everything(args.seed)
    execute(run, make_context(run, *real_loaders(run, seed=args.seed)))


if __name__ == "__main__":
    run_cli(main)
