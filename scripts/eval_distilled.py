"""Re-evaluate saved distilled sets on a copy of their dataset, e.g. another test split:

    python -m scripts.eval_distilled runs/d/best.pt runs/e/best.pt --dataset cifar10 --data_path DIR --real_start

Each set trains --num_eval fresh networks of its arch (MTT's recipe: learned lr, its loss weights, DSA) and
reports validation and test accuracy on DIR's split; --real_start adds the real images it started from.
The data must be the one the set was distilled from (same train images and ZCA); only its test split may
differ. Prints one line per set and writes --out (JSON) when given."""
from datasets import get_info, load_data
from distillation.distiller import evaluate_saved
from utils import UsageError, add_bool, add_common_args, add_data_args, get_device, make_parser, run_cli, write_json


def main():
    p = make_parser(__doc__)
    p.add_argument("sets", nargs="+", help="distilled.pt / best.pt files")
    add_data_args(p)
    add_common_args(p)
    p.add_argument("--num_eval", type=int, default=2, help="fresh networks per set")
    p.add_argument("--epoch_eval_train", type=int, default=300, help="epochs of each network")
    p.add_argument("--batch_train", type=int, default=256, help="minibatch of the networks")
    add_bool(p, "--real_start", False, "also evaluate the real images each set started from")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args()
    if args.num_eval < 1 or args.epoch_eval_train < 1:
        raise UsageError("--num_eval, --epoch_eval_train: must be at least 1")
    data = load_data(get_info(args.dataset).name, args.data_path, get_device(args.device), args.split_seed,
                     args.split)
    results = {}
    for path in args.sets:
        results[path] = evaluate_saved(path, data, args.num_eval, args.epoch_eval_train, args.batch_train,
                                       args.seed, args.real_start)
        line = ", ".join(f"{k} test {v['test_acc']:.2f} +- {v['test_std']:.2f} (val {v['val_acc']:.2f})"
                         for k, v in results[path].items())
        print(f"{path}: {line}", flush=True)
    if args.out:
        write_json(results, args.out)


if __name__ == "__main__":
    run_cli(main)
