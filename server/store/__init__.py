"""The versioned adapter store on disk: the source of truth for versions and channels.

- `store`       `AdapterStore`: scan, register, channels updates, evals, retire, audit
- `snapshot`    the immutable values a scan publishes (`Snapshot`, `Adapter`, `AdapterVersion`)
- `manifest`    manifest, channels, eval report and audit entry schemas
- `rollout`     output checks of a manifest, shadow statistics of an eval report
- `refs`        adapter names and versions: spelling rules and parsing
- `fsutil`      atomic writes, file locks, appends, directory fingerprints
- `uploads`     streamed multipart uploads into a staging directory
- `validation`  `validate_version`: every rule a version must pass (entry point)
- `tree_rules`  files, paths, sizes, manifest and checksums
- `tensor_rules` adapter config and safetensors tensors against the base model
- `base_model`  `BaseModelSpec`: the served base model's names and dimensions
- `layout`      a version directory's file names, the limits on it, the validation report
"""
