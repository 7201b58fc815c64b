"""Print a dataset's split sizes and, with forget flags, select (and save) a forget set, without training.

    python -m forget_sets --dataset cifar10 --num_indexes_to_replace 4500 --save_dir runs/random10
    python -m forget_sets --dataset cifar10 --forget_group mix --mem_scores mem.npz --num_indexes_to_replace 3000 \
        --mask runs/orig/model.pt --save_dir runs/rum/forget      # also writes groups.npz for main_rum.py
"""
import os

from datasets import load_data, save_forget_indices
from forget_sets import forget_set, groups
from utils import add_common_args, add_data_args, add_forget_args, make_parser, prepare_save_dir, run_cli, save_npz


def main():
    p = make_parser(__doc__)
    add_data_args(p)
    add_forget_args(p)
    p.add_argument("--mask", "--model_path", dest="model_path", default=None,
                   help="the original model.pt: features for --es_group and the forget set's entanglement score")
    add_common_args(p)
    args = p.parse_args()
    data = load_data(args.dataset, args.data_path, "cpu", args.split_seed, args.split)
    heldout = f", held-out {len(data.heldout_idx)}" if len(data.heldout_idx) else ""
    print(f"{data.info.name}: train {len(data.train_idx)}, val {len(data.val_idx)}{heldout}, test {len(data.y_test)} "
          f"({args.split} split, seed {args.split_seed})")
    forget, desc = forget_set(args, data)
    if forget is None:
        return
    line = f"forget set: {desc['kind']}, classes {desc['classes']}, {desc['n']} samples"
    line += f", ES {desc['es']:.3f}" if "es" in desc else ""
    if args.save_dir:
        line += f" -> {save_forget_indices(forget, prepare_save_dir(args.save_dir))}"
        if args.forget_group == "mix" or args.es_group == -1:  # its groups too, for main_rum.py --groups_file
            named = groups.groups_from_args(args, data)
            save_npz(os.path.join(args.save_dir, "groups.npz"), **named)
            line += f" (groups {', '.join(named)} -> groups.npz)"
    print(line)


if __name__ == "__main__":
    run_cli(main)
