"""Deciding whether an image exists only on the user's machine ("local-only").

A local-only image must still be in the bundle (a node runs it), but the builder cannot pull
it: the user has to provide it (``docker save``, a local registry). Discovery labels such
images so the report can say so instead of "add it to the spec".

The rule, first match wins:

1. the caller's ``pullable`` patterns: never local-only;
2. the caller's ``local`` patterns: local-only;
3. heuristics (unless ``heuristics=False``):
   a. ``imagePullPolicy: Never``: Kubernetes will never pull it, it must already be on the node;
   b. registry ``localhost`` without a port: the name Podman gives locally built images;
   c. a bare one-word name (``counter-mapper:v1.0``, no registry, no namespace) that is not a
      Docker Hub official image: Docker Hub keeps one-word names for its curated official
      images, so any other one-word name is almost always a locally built image (the
      kubeedge example tells the user to "replace with your mapper image name").

Patterns are ``fnmatch`` globs matched against the normalised reference and against its name
without tag/digest; a pattern without wildcards is normalised first, so ``counter-mapper``
matches ``docker.io/library/counter-mapper:v1.0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from bundler.errors import SpecError
from bundler.spec.refs import ImageRef, parse_image_ref

# The library/ folder of docker-library/official-images (the official image list), plus
# deprecated official images that can still be pulled. A name missing here only changes a
# label (local_only instead of image); it never drops an image from the report.
DOCKER_HUB_OFFICIAL = frozenset("""
adminer aerospike almalinux alpine alt amazoncorretto amazonlinux api-firewall arangodb
archlinux azul-zulu backdrop bash bonita buildpack-deps busybox caddy cassandra chronograf
cirros clearlinux clefos clickhouse clojure composer convertigo couchbase couchdb crate dart
debian docker drupal eclipse-mosquitto eclipse-temurin eggdrop elasticsearch elixir emqx
erlang espocrm fedora flink fluentd friendica gazebo gcc geonetwork ghost golang gradle groovy
haproxy haskell haxe hello-world hitch httpd hylang ibm-semeru-runtimes ibmjava influxdb irssi
jetty joomla jruby julia kapacitor kibana kong krakend lightstreamer liquibase logstash mageia
mariadb matomo maven mediawiki memcached mongo mongo-express monica mysql nats neo4j
neurodebian nextcloud nginx nim node notary odoo open-liberty openjdk oraclelinux orientdb
percona perl photon php php-zendserver phpmyadmin plone postfixadmin postgres pypy python
r-base rabbitmq rakudo-star redis redmine registry rethinkdb rocket.chat rockylinux ros ruby
rust sapmachine satosa silverpeas solr sonarqube spark spiped storm swift swipl teamspeak
telegraf tomcat tomee traefik ubuntu unit varnish websphere-liberty wordpress xwiki yourls znc
zookeeper
centos consul vault jenkins java sentry owncloud nats-streaming opensuse iojs django rails
celery express-gateway kaazing-gateway known mono nuxeo piwik rapidoid sl thrift
""".split())


@dataclass(frozen=True)
class LocalImagePolicy:
    """The caller's say on local-only images; see the module docstring for the rule."""

    local: tuple[str, ...] = ()
    pullable: tuple[str, ...] = ()
    heuristics: bool = True


DEFAULT_POLICY = LocalImagePolicy()


def _matches(patterns: tuple[str, ...], ref: ImageRef) -> bool:
    full, name = str(ref), ref.name
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            try:
                want = parse_image_ref(pattern)
            except SpecError:
                continue
            pinned = "@" in pattern or ":" in pattern.rsplit("/", 1)[-1]
            if (want == ref) if pinned else (want.name == name):
                return True
            continue
        if fnmatchcase(full, pattern) or fnmatchcase(name, pattern):
            return True
    return False


def classify(raw: str, ref: ImageRef, *, pull_policy: object = None,
             policy: LocalImagePolicy = DEFAULT_POLICY) -> tuple[bool, str]:
    """``(local_only, why)`` for an image written ``raw`` that normalises to ``ref``."""
    if _matches(policy.pullable, ref):
        return False, ""
    if _matches(policy.local, ref):
        return True, "listed as local-only by the caller"
    if not policy.heuristics:
        return False, ""
    if pull_policy == "Never":
        return True, "imagePullPolicy: Never: the node must already have it"
    if ref.registry == "localhost":
        return True, "registry 'localhost' is where Podman names locally built images"
    written = raw.strip().split("@", 1)[0]
    if "/" not in written and ref.registry == "docker.io":
        bare = ref.repository.removeprefix("library/")
        if bare not in DOCKER_HUB_OFFICIAL:
            return True, (f"one-word name {bare!r} is not a Docker Hub official image: looks "
                          "built locally (declare it pullable if it is not)")
    return False, ""
