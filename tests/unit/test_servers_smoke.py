import redis

from shardgate.local.servers import NatsServer, RedisServer


def test_redis_restart_keeps_port(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_server.url)
    assert r.ping()
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    assert redis.Redis.from_url(redis_server.url).ping()


def test_nats_starts(nats_server: NatsServer) -> None:
    assert nats_server.running
