"""Markdown table from results/table1_resnet20.json (pasted into docs/entropy-coded-weights.md).

    python recipes/table1_report.py [results/table1_resnet20.json]
"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "results/table1_resnet20.json"
r = json.load(open(path))
s = r["schemes"]
f = s.get("float", {}).get("accuracy")
print(f"ResNet-20, {r['epochs']} epochs per scheme, {r['data']['n_train']} train / {r['data']['n_test']} test images "
      f"(CIFAR-10 JPEG-q75 copy); {r['hardware']['cpu']}, {r['hardware']['torch_threads']} threads.\n")
print("| scheme | body levels | accuracy | vs float | entropy b/w | tANS b/w | tANS + tables b/w | raw b/w | weight file |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for name, x in s.items():
    cfg = x["config"]
    lv = "float" if cfg["levels"] == 0 else (f"per layer {min(cfg['layer_levels'])}-{max(cfg['layer_levels'])}"
                                             if cfg.get("layer_levels") else str(cfg["levels"]))
    lv += f" ({cfg['step_rule']})" if cfg["levels"] else ""
    d = "" if f is None or name == "float" else f"{100 * (x['accuracy'] - f):+.2f}"

    def g(k):
        v = x.get(k)
        return "-" if v is None else f"{v:.3f}"

    print(f"| {name} | {lv} | {100 * x['accuracy']:.2f} % | {d} | {g('entropy_bits_per_weight_body')} | "
          f"{g('tans_bits_per_weight_body')} | {g('tans_with_tables_bits_per_weight_body')} | "
          f"{g('raw_bits_per_weight_body')} | {x['file_bytes']:,} B |")
