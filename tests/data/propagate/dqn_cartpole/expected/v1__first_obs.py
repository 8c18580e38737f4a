import random
import gymnasium as gym
import torch
import torch.nn as nn
import flordb as flor

env = gym.make("CartPole-v1")
q = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
opt = torch.optim.Adam(q.parameters(), lr=flor.arg("lr", 1e-3))
gamma = 0.99
eps = 1.0

for episode in flor.loop("episode", range(flor.arg("episodes", 200))):
    obs, _ = env.reset(seed=episode)
    flor.log("first_obs", float(obs[0]))
    done = False
    ret = 0.0
    while not done:
        if random.random() < eps:
            action = env.action_space.sample()
        else:
            action = q(torch.tensor(obs)).argmax().item()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        target = reward + gamma * q(torch.tensor(next_obs)).max().detach() * (not done)
        loss = (q(torch.tensor(obs))[action] - target) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        obs = next_obs
        ret += reward
    eps = max(0.05, eps * 0.99)
    flor.log("return", ret)
