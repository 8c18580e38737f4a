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

for episode in flor.loop("episode", range(flor.arg("episodes", 200))):
    obs, _ = env.reset(seed=episode)
    done = False
    ret = 0.0
    while not done:
        if random.random() < epsilon:
            action = env.action_space.sample()
        else:
            action = policy_net(torch.tensor(obs)).argmax().item()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        buffer.append((obs, action, reward, next_obs, done))
        obs = next_obs
        ret += reward
        if len(buffer) >= batch_size:
            batch = random.sample(buffer, batch_size)
            s, a, r, s2, d = map(torch.tensor, zip(*batch))
            target = r + gamma * target_net(s2.float()).max(1).values * (~d)
            q_values = policy_net(s.float()).gather(1, a.unsqueeze(1)).squeeze(1)
            loss = nn.functional.mse_loss(q_values, target.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    if episode % 10 == 0:
        target_net.load_state_dict(policy_net.state_dict())
        flor.log("synced", episode)
    epsilon = max(0.05, epsilon * 0.99)
    flor.log("return", ret)
