#!/usr/bin/env bash
# Install the veraPDF validator (PDF/A) into the docproc tool cache from Maven Central and print
# the path of its launcher. It is a Java application: Maven copies the CLI jar and its
# dependencies; the launcher runs it with the machine's Java (17 or later).
# veraPDF's POMs name the project's own repository, which is not reachable here: a mirror
# sends every request to Maven Central, which holds all of its artifacts.
set -euo pipefail

VERAPDF_VERSION="1.28.2"
tools_dir="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"
home="$tools_dir/verapdf-$VERAPDF_VERSION"
launcher="$home/verapdf"

if [[ -x "$launcher" ]]; then
    echo "$launcher"
    exit 0
fi
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    # shellcheck source=../lib/apt.sh
    source "$(dirname "$0")/../lib/apt.sh"
    apt_install verapdf.sh default-jre-headless maven >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/settings.xml" <<XML
<settings><mirrors><mirror>
  <id>central-only</id><mirrorOf>*</mirrorOf><url>https://repo1.maven.org/maven2</url>
</mirror></mirrors></settings>
XML
cat > "$work/pom.xml" <<XML
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.docproc</groupId><artifactId>verapdf-install</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.verapdf.apps</groupId><artifactId>greenfield-apps</artifactId>
      <version>$VERAPDF_VERSION</version>
    </dependency>
  </dependencies>
</project>
XML
echo "verapdf.sh: fetching veraPDF $VERAPDF_VERSION from Maven Central" >&2
mkdir -p "$home.tmp/lib"
mvn -B -q -s "$work/settings.xml" -f "$work/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$home.tmp/lib" >&2
cat > "$home.tmp/verapdf" <<'SH'
#!/usr/bin/env bash
here="$(cd "$(dirname "$0")" && pwd)"
exec java -Xmx1g -cp "$here/lib/*" -Dapp.home="$here" org.verapdf.apps.GreenfieldCliWrapper "$@"
SH
chmod +x "$home.tmp/verapdf"
rm -rf "$home"
mv "$home.tmp" "$home"
echo "$launcher"
