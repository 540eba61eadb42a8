"""The bottom layer: what every other layer builds on, knowing nothing of SSKT.

    foundation.files      atomic, durable file writes (the one writer) and file content hashes
    foundation.h5blocks   the resumable HDF5 block writer of long jobs (source caches, frame stores)
    foundation.errors     UserError: the base of every one-line error a user can fix (exit status 2)
    foundation.registry   Registry: names -> factories, filled where each is defined
    foundation.schema     config schema building blocks (pydantic): Strict, registered, field markers,
                          one-line validation errors (ConfigError)
    foundation.config_files  YAML config files with bases (includes), merged

Nothing here imports the project's other packages.
"""
