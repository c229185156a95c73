#!/usr/bin/env bash
# Builds Apicurio Registry 2.4.2.Final (a real Confluent-compatible schema registry: ccompat API at
# /apis/ccompat/v7, in-memory H2 storage) from Maven Central into CACHE/app, the runnable Quarkus app
# (fast-jar: `java -jar CACHE/app/quarkus-run.jar`). CACHE is the first argument (default
# .cache/registry, relative to the repository root). Apicurio ships only a library jar; pom.xml
# beside this script turns it into the app with Quarkus' build goal.
# Idempotent: returns at once when the app of this pom is already there. Never fails setup: without
# Java 17+ or Maven, or when the build fails, it prints why and exits 0 (the registry tests skip).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
POM=$HERE/pom.xml
CACHE=${1:-.cache/registry}
DEST=$CACHE/app
STAMP=$DEST/.built
if [[ -f $STAMP && $STAMP -nt $POM ]]; then
    exit 0
fi
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    echo "note: Java or Maven missing: the schema registry is not built, its tests will be skipped"
    exit 0
fi
major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [[ -z $major || ${major%%.*} -lt 17 ]]; then
    echo "note: the schema registry build needs Java 17+ (found ${major:-unknown}): its tests will be skipped"
    exit 0
fi
echo "building the schema registry (Apicurio Registry) with Maven into $DEST (once)"
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
DEST=$CACHE/app
BUILD=$CACHE/build
LOG=$CACHE/fetch.log
rm -rf "$BUILD" "$DEST.tmp"
mkdir -p "$BUILD"
cp "$POM" "$BUILD/pom.xml"
# Maven's own output goes to a log (Debian's Maven 3.8 prints colour codes even when quiet).
# -DskipExternalRepos: Apicurio's parent pom adds JitPack/Confluent repositories unless it is set.
# -D%prod.quarkus.package.type=fast-jar: Apicurio's own properties ask for legacy-jar in profile prod.
if ! (cd "$BUILD" && mvn -B -Dstyle.color=never -DskipExternalRepos \
        -D%prod.quarkus.package.type=fast-jar package) >"$LOG" 2>&1 \
        || [[ ! -f $BUILD/target/quarkus-app/quarkus-run.jar ]]; then
    rm -rf "$BUILD"
    tail -n 20 "$LOG"
    echo "note: Maven could not build the schema registry (log: $LOG): its tests will be skipped"
    exit 0
fi
mv "$BUILD/target/quarkus-app" "$DEST.tmp"
rm -rf "$BUILD" "$DEST"
mv "$DEST.tmp" "$DEST"
touch "$STAMP"
