import random
from collections import deque

import gymnasium as gym
import torch
import torch.nn as nn
import flordb as flor

env = gym.make("CartPole-v1")
policy_net = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
target_net = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
target_net.load_state_dict(policy_net.state_dict())
opt = torch.optim.Adam(policy_net.parameters(), lr=flor.arg("lr", 1e-3))
buffer = deque(maxlen=10000)
gamma = 0.99
epsilon = 1.0
batch_size = flor.arg("batch_size", 64)
target_every = flor.arg("target_every", 10)


def update(batch):
    s, a, r, s2, d = map(torch.tensor, zip(*batch))
    with torch.no_grad():
        target = r + gamma * target_net(s2.float()).max(1).values * (~d)
    q_values = policy_net(s.float()).gather(1, a.unsqueeze(1)).squeeze(1)
    loss = nn.functional.smooth_l1_loss(q_values, target.float())
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy_net.parameters(), 10.0)
    opt.step()
    return loss.item()


with flor.checkpointing(policy_net=policy_net, target_net=target_net, opt=opt):
    for episode in flor.loop("episode", range(flor.arg("episodes", 200))):
        obs, _ = env.reset(seed=episode)
        done = False
        ret = 0.0
        losses = []
        while not done:
            if random.random() < epsilon:
                action = env.action_space.sample()
            else:
                with torch.no_grad():
                    action = policy_net(torch.tensor(obs)).argmax().item()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            buffer.append((obs, action, reward, next_obs, done))
            obs = next_obs
            ret += reward
            if len(buffer) >= batch_size:
                losses.append(update(random.sample(buffer, batch_size)))
        if episode % target_every == 0:
            target_net.load_state_dict(policy_net.state_dict())
        epsilon = max(0.05, epsilon * 0.99)
        flor.log("return", ret)
