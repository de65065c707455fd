#!/bin/sh
# Entry point of the export image.
#
#   (no arguments)       train and export what the CONVSCOPE_EXPORT_* variables say
#   --opt ...            the same, with these model_export arguments added (they win)
#   anything else        run it as a command, e.g. `python -m model_export import ...`
#
# CONVSCOPE_EXPORT_ARCH, _DATASET, _EPOCHS, _OUT (default /models), _NAME,
# _MAX_TRAIN_SAMPLES, _IF_MISSING (1: exit 0 at once when the model already has a
# complete version, which is how the compose job skips training on a filled volume).
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

set -- --arch "${CONVSCOPE_EXPORT_ARCH:-tinyvgg}" \
       --dataset "${CONVSCOPE_EXPORT_DATASET:-fashion-mnist}" \
       --epochs "${CONVSCOPE_EXPORT_EPOCHS:-3}" \
       --out "${CONVSCOPE_EXPORT_OUT:-/models}" \
       ${CONVSCOPE_EXPORT_NAME:+--name "$CONVSCOPE_EXPORT_NAME"} \
       ${CONVSCOPE_EXPORT_MAX_TRAIN_SAMPLES:+--max-train-samples "$CONVSCOPE_EXPORT_MAX_TRAIN_SAMPLES"} \
       "$@"
case "${CONVSCOPE_EXPORT_IF_MISSING:-1}" in
    1|true|yes|on) set -- "$@" --if-missing ;;
esac
echo "convscope-export: python -m model_export $*" >&2
exec python -m model_export "$@"
