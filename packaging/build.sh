#!/usr/bin/env bash
# Build the Linux desktop bundle: dist/avatar-studio-<version>-linux-x86_64.tar.gz
#
#   packaging/build.sh [--dist DIR] [--work DIR] [--no-trim] [--python PY]
#
#   --dist DIR   where the bundle folder and the tarball go (default: <root>/dist)
#   --work DIR   PyInstaller's build cache (default: <root>/build/pyinstaller)
#   --no-trim    keep every Qt/VTK module and pocketsphinx file (AVATAR_STUDIO_BUNDLE_TRIM=0), for measuring
#   --python PY  the interpreter whose environment is frozen (default: $AVATAR_STUDIO_VENV/bin/python or
#                <root>/.venv/bin/python); it needs `pip install -e '.[packaging]'`
#
# The tarball unpacks into avatar-studio-<version>/ holding the executable `avatar-studio`, its
# `_internal/` folder, the icon, the .desktop entry, the AppStream metadata and `install.sh` (which
# registers the app in the user's menu). Prints the tarball's path as the last line of stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
dist="$root/dist"
work="$root/build/pyinstaller"
trim=1
python="${AVATAR_STUDIO_VENV:-$root/.venv}/bin/python"
while (($#)); do
    case "$1" in
        --dist) dist="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --no-trim) trim=0; shift ;;
        --python) python="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] || { echo "build.sh: builds on Linux x86_64 only" >&2; exit 2; }
"$python" -c 'import PyInstaller' 2>/dev/null \
    || { echo "build.sh: PyInstaller is missing: $python -m pip install -e '$root[packaging]'" >&2; exit 2; }
command -v objdump >/dev/null && command -v strip >/dev/null \
    || { echo "build.sh: objdump/strip are missing (apt-get install binutils)" >&2; exit 2; }

version="$(cd "$root" && "$python" -c 'import avatar_studio; print(avatar_studio.__version__)')"
name="avatar-studio-$version"
mkdir -p "$dist" "$work"
dist="$(cd "$dist" && pwd -P)"
start=$SECONDS

echo "build.sh: PyInstaller (trim=$trim) → $dist/avatar-studio" >&2
AVATAR_STUDIO_BUNDLE_TRIM=$trim "$python" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$dist" --workpath "$work" "$root/packaging/avatar-studio.spec" >&2

bundle="$dist/avatar-studio"
if ((trim)); then
    # VTK's libraries keep their symbol tables (~30% of their size). Strip only those: PyInstaller's own
    # `strip` option also hits the auditwheel-patched libraries of numpy/scipy/Pillow and corrupts them
    # ("ELF load command address/offset not page-aligned"). Every stripped library must still dlopen.
    strip --strip-unneeded "$bundle"/_internal/vtkmodules/*.so*
    "$python" - "$bundle/_internal/vtkmodules" <<'PY' >&2
import ctypes, pathlib, sys
libs = sorted(pathlib.Path(sys.argv[1]).glob("*.so*"))  # the libraries and the Python extension modules
for lib in libs:
    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
print(f"build.sh: stripped and reloaded {len(libs)} VTK libraries and extension modules")
PY
fi
# Desktop integration files sit next to the executable; install.sh fills in the paths on the user's machine.
install -m 0644 "$root/resources/icons/avatar-studio.svg" "$bundle/avatar-studio.svg"
install -m 0644 "$root/resources/icons/avatar-studio-256.png" "$bundle/avatar-studio.png"
install -m 0644 "$root/packaging/linux/io.github.avatar_studio.AvatarStudio.desktop" "$bundle/"
sed "s/@VERSION@/$version/g; s/@DATE@/$(date -u +%Y-%m-%d)/g" \
    "$root/packaging/linux/io.github.avatar_studio.AvatarStudio.metainfo.xml" \
    >"$bundle/io.github.avatar_studio.AvatarStudio.metainfo.xml"
install -m 0755 "$root/packaging/linux/install.sh" "$bundle/install.sh"

tarball="$dist/$name-linux-x86_64.tar.gz"
rm -rf "${dist:?}/$name" "$tarball"
mv "$bundle" "$dist/$name"
# Sorted, owner-neutral entries so two builds of the same tree differ only in the files' contents.
tar -C "$dist" --sort=name --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"
echo "build.sh: $(du -sh "$dist/$name" | cut -f1) unpacked, $(du -h "$tarball" | cut -f1) tar.gz," \
    "$((SECONDS - start)) s" >&2
echo "$tarball"
