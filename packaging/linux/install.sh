#!/bin/sh
# Register this unpacked Avatar Studio bundle with the desktop (menu entry, icon, `avatar-studio` on PATH).
#
#   ./install.sh            for the current user (~/.local)
#   ./install.sh --remove   undo it (the bundle folder itself is left alone)
#
# The bundle runs from wherever it was unpacked; nothing is copied but a symlink, the .desktop
# entry, the icons and the AppStream file, so deleting the folder and running --remove uninstalls it.
set -eu
here="$(cd "$(dirname "$0")" && pwd -P)"
id=io.github.avatar_studio.AvatarStudio
data="${XDG_DATA_HOME:-$HOME/.local/share}"
bin="$HOME/.local/bin"
if [ "${1:-}" = "--remove" ]; then
    rm -f "$bin/avatar-studio" "$data/applications/$id.desktop" "$data/metainfo/$id.metainfo.xml" \
        "$data/icons/hicolor/scalable/apps/$id.svg" "$data/icons/hicolor/256x256/apps/$id.png"
    echo "removed Avatar Studio's desktop entry"
    exit 0
fi
mkdir -p "$bin" "$data/applications" "$data/metainfo" "$data/icons/hicolor/scalable/apps" \
    "$data/icons/hicolor/256x256/apps"
ln -sf "$here/avatar-studio" "$bin/avatar-studio"
sed "s|^Exec=avatar-studio|Exec=\"$here/avatar-studio\"|; s|^TryExec=avatar-studio|TryExec=$here/avatar-studio|" \
    "$here/$id.desktop" >"$data/applications/$id.desktop"
cp "$here/$id.metainfo.xml" "$data/metainfo/"
cp "$here/avatar-studio.svg" "$data/icons/hicolor/scalable/apps/$id.svg"
cp "$here/avatar-studio.png" "$data/icons/hicolor/256x256/apps/$id.png"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
echo "installed: Avatar Studio is in the applications menu; \`avatar-studio --self-test\` checks the bundle"
